"""ConFIG: the spec's vectors, the Gramian form against the paper's formula on the rows, and
the defining property (equal cosines with every objective)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from gradsurgery.methods.config import ConFIG

F1 = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], dtype=torch.float64)
F2 = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
F3 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-0.5, -0.5]], dtype=torch.float64)
F4 = torch.tensor([[3.0, 4.0]] * 3, dtype=torch.float64)
F5 = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)


def _run(method: ConFIG, G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
    d = method(G)
    block = method.last_report.blocks["block"]  # type: ignore[union-attr]
    return d, block.weights, block.details


def _close(a: torch.Tensor, values: list[float]) -> None:
    torch.testing.assert_close(a, torch.tensor(values, dtype=torch.float64), atol=1e-4, rtol=0)


def _on_rows(G: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """The paper's Eq. 2 on the rows themselves (least squares, as the official code)."""
    norms = G.norm(dim=1, keepdim=True)
    units = torch.where(norms > 0, G / norms.clamp_min(1e-300), torch.zeros_like(G))
    direction = torch.linalg.pinv(units) @ p
    if float(direction.norm()) == 0:
        return torch.zeros(G.shape[1], dtype=G.dtype)
    direction = direction / direction.norm()
    return (G @ direction).sum() * direction


def test_spec_vectors() -> None:
    d, w, details = _run(ConFIG(), F1)
    _close(w, [1.2265, 0.8441])
    _close(d, [0.1588, 2.0706, 2.0706])
    assert details["length"] == pytest.approx(float(d.norm()))
    d, w, _ = _run(ConFIG(), F2)
    torch.testing.assert_close(
        w,
        torch.tensor(
            [(1 + 1 / math.sqrt(2)) / math.sqrt(2), 0.5 + 0.5 / math.sqrt(2)], dtype=torch.float64
        ),
    )
    _close(d, [0.3536, 0.8536])
    units = F2 / F2.norm(dim=1, keepdim=True)
    cosines = units @ (d / d.norm())
    assert float(cosines[0]) == pytest.approx(float(cosines[1]))
    d, w, _ = _run(ConFIG(), F3)
    _close(w, [0.25, 0.25, -0.5])
    _close(d, [0.5, 0.5])
    assert float(F3[2] @ d) < 0  # k > rank: the conflict-free guarantee is lost
    _, w, _ = _run(ConFIG(), F4)
    torch.testing.assert_close(w, torch.ones(3, dtype=torch.float64))
    _, w, _ = _run(ConFIG(), F5)
    torch.testing.assert_close(w, torch.tensor([1.0, 0.0], dtype=torch.float64))


def test_no_direction_gives_zero() -> None:
    d, _, details = _run(ConFIG(), torch.tensor([[1.0, 2.0], [-2.0, -4.0]], dtype=torch.float64))
    torch.testing.assert_close(d, torch.zeros(2, dtype=torch.float64))
    assert details["length"] == 0.0
    d, _, _ = _run(ConFIG(), torch.zeros(3, 4, dtype=torch.float64))
    torch.testing.assert_close(d, torch.zeros(4, dtype=torch.float64))


@given(
    k=st.integers(1, 6),
    extra=st.integers(0, 3),
    seed=st.integers(0, 2**32 - 1),
    weighted=st.booleans(),
)
def test_gramian_form_matches_the_rows_and_cosines_follow_the_preference(
    k: int, extra: int, seed: int, weighted: bool
) -> None:
    rng = np.random.default_rng(seed)
    G = torch.from_numpy(rng.standard_normal((k, k + extra)) * 10.0 ** rng.uniform(-3, 3, (k, 1)))
    units = G / G.norm(dim=1, keepdim=True)
    assume(float(torch.linalg.svdvals(units).min()) > 1e-2)
    p = (
        torch.from_numpy(rng.uniform(0.2, 2.0, k))
        if weighted
        else torch.ones(k, dtype=torch.float64)
    )
    method = ConFIG(preference=p.tolist()) if weighted else ConFIG()
    d, _, _ = _run(method, G)
    expected = _on_rows(G, p)
    torch.testing.assert_close(d, expected, rtol=1e-7, atol=1e-9 * float(expected.norm()))
    # Independent rows: cos(g_i, d) ∝ p_i, all positive (conflict-free), and the length is
    # the sum of the projections.
    cosines = units @ (d / d.norm())
    torch.testing.assert_close(cosines / p, (cosines[0] / p[0]).expand(k), rtol=1e-7, atol=0)
    assert float(cosines.min()) > 0
    assert float(d.norm()) == pytest.approx(float((G @ (d / d.norm())).sum()), rel=1e-9)


def test_zero_row_is_ignored() -> None:
    G = torch.tensor([[1.0, 0.0], [0.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    d, w, _ = _run(ConFIG(), G)
    assert float(w[1]) == 0.0
    torch.testing.assert_close(d, ConFIG()(G[[0, 2]]))
    # A row 1e-120 times shorter than the longest counts as zero too (any scale).
    G[1, 0] = 1e-120
    torch.testing.assert_close(ConFIG()(G), d)
    torch.testing.assert_close(ConFIG()(1e-20 * G), 1e-20 * d)
