"""DualProj: the spec's vectors and its defining property (the Euclidean projection of the
weighted sum onto the dual cone, and no change when the sum is already inside)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import matrices
from hypothesis import example, given
from hypothesis import strategies as st

from gradsurgery.methods.dualproj import DualProj

F1 = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], dtype=torch.float64)
F2 = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
F3 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-0.5, -0.5]], dtype=torch.float64)


def _run(method: DualProj, G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, object]:
    d = method(G)
    block = method.last_report.blocks["block"]  # type: ignore[union-attr]
    return d, block.weights, block


def test_spec_vectors() -> None:
    d, w, block = _run(DualProj(), F1)
    # Hand: w = (1 + 4/18, 1).
    torch.testing.assert_close(
        w, torch.tensor([1 + 4 / 18, 1.0], dtype=torch.float64), rtol=1e-7, atol=0
    )
    torch.testing.assert_close(
        d, torch.tensor([10 / 9, 20 / 9, 20 / 9], dtype=torch.float64), rtol=1e-7, atol=0
    )
    assert block.projected == ("0",)  # type: ignore[attr-defined]
    # F2: (Gᵀ1)·g1 = 0, on the boundary: nothing moves, bit for bit.
    d, w, block = _run(DualProj(), F2)
    assert w.tolist() == [1.0, 1.0] and block.changed is False  # type: ignore[attr-defined]
    torch.testing.assert_close(d, torch.tensor([0.0, 1.0], dtype=torch.float64))
    d, _, _ = _run(DualProj(), F3)
    torch.testing.assert_close(d, torch.zeros(2, dtype=torch.float64), atol=1e-7, rtol=0)
    # TorchJD's p = 1/k gives half the weights (spec: TorchJD (0.6109, 0.5) with its
    # regularisation; exact 11/18 = 0.6111).
    torch.testing.assert_close(
        DualProj(preference=[0.5, 0.5])(F1),
        d.new_tensor([5 / 9, 10 / 9, 10 / 9]),
        rtol=1e-7,
        atol=0,
    )


@given(G=matrices(max_k=6), seed=st.integers(0, 100))
def test_update_is_the_projection_of_the_weighted_sum(G: torch.Tensor, seed: int) -> None:
    # Exact mode: d = Gᵀw lies in the dual cone, y − d is orthogonal to d (y = Gᵀp), and
    # y − d = −Gᵀ(w − p) with w ≥ p: the optimality conditions of the projection. They are
    # homogeneous in G, so G is taken at unit scale (tolerances of order |G|³ would
    # underflow for rows of norm 1e-120; homogeneity itself is a property of the suite),
    # scaled by the largest entry: torch's norm of a row of norm 1e-207 underflows to 0.
    top = float(G.abs().max())
    G = G / top if top > 0 else G
    k = G.shape[0]
    p = np.random.default_rng(seed).uniform(0.0, 2.0, k)
    method = DualProj(preference=p.tolist(), regularization=0.0)
    d, w, block = _run(method, G)
    y = torch.from_numpy(p) @ G
    norms = G.norm(dim=1)
    size = float((w.abs() * norms).sum()) + float(norms.max()) + 1e-300
    exception = 1e-6 if block.details["dependent"] else 0.0  # type: ignore[attr-defined]
    tol = (1e-9 + exception) * float(norms.max()) * size
    assert float((G @ d).min()) >= -tol
    assert abs(float((y - d) @ d)) <= tol * size
    nonzero = norms > 0
    assert bool((w[nonzero] >= torch.from_numpy(p)[nonzero] - 1e-12 * size).all())


@given(G=matrices(max_k=6))
@example(G=torch.tensor([[-7.4039e-207, 0.0], [2.9361e-284, 0.0]], dtype=torch.float64))
def test_inside_the_cone_nothing_moves(G: torch.Tensor) -> None:
    # At unit scale: the cosines below multiply two norms, which underflow for rows of norm
    # 1e-167 and 1e-260 (a conflict would read as a zero cosine). Scaled by the largest entry,
    # not the largest norm: torch's norm of a row of norm 1e-207 underflows to 0.
    top = float(G.abs().max())
    G = G / top if top > 0 else G
    y = G.sum(0)
    norms = G.norm(dim=1)
    counted = norms > 1e-100 * norms.max()  # shorter rows count as zero rows
    d, w, block = _run(DualProj(), G)
    cosines = (G[counted] @ y) / (norms[counted] * y.norm()).clamp_min(1e-300)
    if bool((cosines >= 0).all()):
        assert bool((w == 1).all())
        torch.testing.assert_close(d, y)
    elif float(cosines.min()) < -1e-12:  # beyond rounding: the sum conflicts with a row
        assert block.projected  # type: ignore[attr-defined]


def test_hyperparameters() -> None:
    assert DualProj().hyperparameters() == {
        "preference": None,
        "regularization": 1e-8,
        "scope": "block",
    }
    with pytest.raises(ValueError, match="regularization"):
        DualProj(regularization=2.0)
