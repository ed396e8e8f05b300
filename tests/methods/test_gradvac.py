"""GradVac: the specification's vectors, the target cosine it enforces, and its state."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import matrices
from hypothesis import assume, given
from hypothesis import strategies as st

from gradsurgery.methods.gradvac import GradVac, gradvac_weights
from gradsurgery.methods.pcgrad import PCGrad

F1 = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], dtype=torch.float64)
F2 = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)


def _weights(method: GradVac) -> torch.Tensor:
    assert method.last_report is not None
    return method.last_report.blocks["block"].weights


def test_f1_two_steps() -> None:
    method = GradVac()
    out = method(F1)
    torch.testing.assert_close(
        _weights(method), torch.tensor([2.2222, 1.5789]).double(), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(
        out, torch.tensor([0.5848, 3.8012, 3.8012]).double(), atol=1e-4, rtol=0
    )
    # cos(g1, g2) = −22/√(18·38) = −0.8412; the target moves half-way from 0.
    targets = method.last_report.blocks["block"].details["targets"]
    assert targets[0][1] == pytest.approx(-0.4206, abs=1e-4)
    assert targets[1][0] == pytest.approx(-0.4206, abs=1e-4)
    out = method(F1)
    torch.testing.assert_close(
        _weights(method), torch.tensor([1.8580, 1.4064]).double(), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(
        out, torch.tensor([1.0065, 3.2644, 3.2644]).double(), atol=1e-4, rtol=0
    )


def test_f2_two_steps() -> None:
    method = GradVac()
    out = method(F2)
    torch.testing.assert_close(
        _weights(method), torch.tensor([2.0, 1.5]).double(), atol=1e-12, rtol=0
    )
    torch.testing.assert_close(out, torch.tensor([0.5, 1.5]).double(), atol=1e-12, rtol=0)
    targets = method.last_report.blocks["block"].details["targets"]
    assert targets[0][1] == pytest.approx(-1 / (2 * math.sqrt(2)), abs=1e-12)  # −0.3536
    method(F2)
    torch.testing.assert_close(
        _weights(method), torch.tensor([1.6220, 1.3110]).double(), atol=1e-4, rtol=0
    )


@given(G=matrices(max_k=5), seed=st.integers(0, 2**16))
def test_first_step_is_pcgrad(G: torch.Tensor, seed: int) -> None:
    # With targets at 0 the correction is PCGrad's projection; same seed, same orders.
    scale = float(G.abs().max()) * G.shape[0] + 1e-12
    torch.testing.assert_close(
        GradVac(seed=seed)(G), PCGrad(seed=seed)(G), rtol=1e-9, atol=1e-9 * scale
    )


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@given(
    G=matrices(k=2, max_p=6),
    phi=st.floats(-0.95, 0.95),
)
def test_correction_sets_the_cosine_to_its_target(G: torch.Tensor, phi: float) -> None:
    # The defining property: when cos(g_i, g_j) < φ̂_ij, g_i^PC gets exactly cosine φ̂_ij.
    g = G.numpy()
    norms = np.linalg.norm(g, axis=1)
    assume(bool((norms > 1e-3 * norms.max()).all()) and norms.max() > 0)
    before = _cos(g[0], g[1])
    assume(abs(before) < 1 - 1e-6)
    targets = np.full((2, 2), phi)
    C, new_targets, corrected = gradvac_weights(G @ G.T, targets, [[1], [0]], beta=0.5)
    modified = C[0].numpy() @ g
    if before < phi:
        assert 0 in corrected
        assert _cos(modified, g[1]) == pytest.approx(phi, abs=1e-7)
    else:
        np.testing.assert_allclose(modified, g[0], rtol=0, atol=0)
    assert new_targets[0, 1] == pytest.approx(0.5 * phi + 0.5 * before, abs=1e-12)


def test_identical_rows_are_their_sum_and_targets_rise() -> None:
    G = torch.tensor([[3.0, 4.0]] * 3, dtype=torch.float64)
    method = GradVac()
    for _ in range(3):
        torch.testing.assert_close(method(G), 3 * G[0])
    targets = np.array(method.last_report.blocks["block"].details["targets"])
    off = ~np.eye(3, dtype=bool)
    np.testing.assert_allclose(targets[off], 1 - 0.5**3, rtol=0, atol=1e-12)


def test_targets_follow_objective_names() -> None:
    a, b = GradVac(), GradVac()
    a(F1, objectives=["x", "y"])
    b(F1, objectives=["x", "y"])
    # b sees the same objectives in the other row order: same update.
    torch.testing.assert_close(
        a(F1, objectives=["x", "y"]), b(F1[[1, 0]], objectives=["y", "x"]), rtol=1e-12, atol=1e-12
    )


def test_state_round_trip_keeps_targets_and_orders() -> None:
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randn(4, 6, generator=gen, dtype=torch.float64) for _ in range(5)]
    first = GradVac(seed=3)
    for G in inputs[:2]:
        first(G)
    second = GradVac(seed=3)
    second.load_state_dict(first.state_dict())
    for G in inputs[2:]:
        torch.testing.assert_close(first(G), second(G), rtol=0, atol=0)
    first.reset()
    fresh = GradVac(seed=3)
    for G in inputs:
        torch.testing.assert_close(first(G), fresh(G), rtol=0, atol=0)


def test_zero_row_and_single_row() -> None:
    G = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    method = GradVac()
    for _ in range(3):
        torch.testing.assert_close(method(G), G.sum(0))
    g = torch.tensor([[3.0, -1.0]], dtype=torch.float64)
    torch.testing.assert_close(GradVac()(g), g[0])


def test_bad_hyperparameters() -> None:
    with pytest.raises(ValueError, match="beta"):
        GradVac(beta=1.5)
    with pytest.raises(TypeError, match="beta"):
        GradVac(beta="0.5")  # type: ignore[arg-type]
