"""CAGrad: hand-derived vectors, the dual's optimality and the paper's invariants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import matrices
from hypothesis import assume, given
from hypothesis import strategies as st

import gradsurgery as gs

J = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], dtype=torch.float64)


def test_vector_without_rescale() -> None:
    # GG = [[18, -22], [-22, 38]], g0 = (1, 1, 1), |g0|² = 3. F(w) = w·(-2, 22) + 0.5·√3·|g_w|
    # is minimised at w = (1, 0): d = g0 + 0.5·√3/√18 · g1 = (0.1835, 1.2041, 1.2041).
    d = gs.CAGrad(rescale=0, scale="mean")(J)
    lam = 0.5 * np.sqrt(3.0) / np.sqrt(18.0)
    expected = J.mean(0) + lam * J[0]
    torch.testing.assert_close(d, expected, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(
        d, torch.tensor([0.1835, 1.2041, 1.2041], dtype=torch.float64), atol=1e-4, rtol=0
    )
    assert float((J @ d).min()) == pytest.approx(1.674, abs=1e-3)


def test_official_rescale_options() -> None:
    base = gs.CAGrad(rescale=0, scale="mean")(J)
    torch.testing.assert_close(gs.CAGrad(rescale=1, scale="mean")(J), base / 1.25)
    torch.testing.assert_close(gs.CAGrad(rescale=2, scale="mean")(J), base / 1.5)
    torch.testing.assert_close(gs.CAGrad(rescale=1)(J), 2 * base / 1.25)
    torch.testing.assert_close(
        gs.CAGrad(rescale=1, scale="mean")(J),
        torch.tensor([0.1468, 0.9633, 0.9633], dtype=torch.float64),
        atol=1e-4,
        rtol=0,
    )


@given(G=matrices(), rescale=st.sampled_from([0, 1, 2]))
def test_c_zero_is_the_scale_matched_mean(G: torch.Tensor, rescale: int) -> None:
    torch.testing.assert_close(gs.CAGrad(c=0.0, rescale=rescale)(G), G.sum(0))
    torch.testing.assert_close(gs.CAGrad(c=0.0, rescale=rescale, scale="mean")(G), G.mean(0))


def test_single_row() -> None:
    g = torch.tensor([[3.0, -1.0]], dtype=torch.float64)
    torch.testing.assert_close(gs.CAGrad(rescale=0, scale="mean")(g), 1.5 * g[0])
    torch.testing.assert_close(gs.CAGrad(rescale=1, scale="mean")(g), 1.5 / 1.25 * g[0])
    torch.testing.assert_close(gs.CAGrad()(g), g[0])


def test_opposite_rows_give_zero() -> None:
    g = torch.tensor([1.0, 2.0], dtype=torch.float64)
    method = gs.CAGrad()
    torch.testing.assert_close(method(torch.stack([g, -g])), torch.zeros(2, dtype=torch.float64))
    assert method.last_report.blocks["block"].details["degenerate"] == "mean gradient is zero"


@given(G=matrices(max_k=5), c=st.floats(0.05, 0.95))
def test_dual_invariants(G: torch.Tensor, c: float) -> None:
    k = G.shape[0]
    g0 = G.mean(0)
    assume(float(g0.norm()) > 1e-3 * float(G.norm()) + 1e-9)
    method = gs.CAGrad(c=c, rescale=0, scale="mean")
    d = method(G)
    details = method.last_report.blocks["block"].details
    w = np.array(details["w"])
    assert w.min() >= -1e-12 and abs(w.sum() - 1) < 1e-9
    scale = float(G.norm()) ** 2 + 1e-12
    # The solution never does worse on the worst objective than g0 (which is feasible).
    assert float((G @ d).min()) >= float((G @ g0).min()) - 1e-6 * scale
    if details["degenerate"] is None:
        # It sits on the ball's boundary.
        assert float((d - g0).norm()) == pytest.approx(c * float(g0.norm()), rel=1e-6, abs=1e-9)
        # Strong duality: min_i g_i·d = F(w*) = g_w·g0 + c|g0||g_w|.
        gw = torch.from_numpy(w) @ G
        F = float(gw @ g0) + c * float(g0.norm()) * float(gw.norm())
        assert float((G @ d).min()) == pytest.approx(F, rel=1e-4, abs=1e-5 * scale)
        # And w* is the dual minimiser: no random simplex point does better.
        rng = np.random.default_rng(0)
        for v in rng.dirichlet(np.ones(k), size=200):
            gv = torch.from_numpy(v) @ G
            Fv = float(gv @ g0) + c * float(g0.norm()) * float(gv.norm())
            assert Fv + 1e-6 * scale >= F


def test_bad_hyperparameters() -> None:
    for kwargs in ({"c": -0.1}, {"c": float("nan")}, {"rescale": 3}, {"scale": "max"}):
        with pytest.raises(ValueError):
            gs.CAGrad(**kwargs)
