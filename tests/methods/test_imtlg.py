"""IMTL-G: the spec's vectors and its defining property (equal projections on the unit
gradients)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from gradsurgery.methods.imtlg import IMTLG

F1 = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], dtype=torch.float64)
F2 = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
F3 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-0.5, -0.5]], dtype=torch.float64)
F4 = torch.tensor([[3.0, 4.0]] * 3, dtype=torch.float64)
F5 = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)


def _run(G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
    method = IMTLG()
    d = method(G)
    block = method.last_report.blocks["block"]  # type: ignore[union-attr]
    return d, block.weights, block.details


def test_spec_vectors() -> None:
    # Paper weights α (Σα = 1) times k.
    d, w, _ = _run(F1)
    torch.testing.assert_close(
        w, 2 * torch.tensor([0.5923, 0.4077], dtype=torch.float64), atol=2e-4, rtol=0
    )
    torch.testing.assert_close(
        d, 2 * torch.tensor([0.0767, 1.0, 1.0], dtype=torch.float64), atol=2e-4, rtol=0
    )
    d, w, _ = _run(F2)
    alpha = torch.tensor([2 - math.sqrt(2), math.sqrt(2) - 1], dtype=torch.float64)
    torch.testing.assert_close(w, 2 * alpha)
    # Both projections on u1 = (1, 0) and u2 = (-1, 1)/√2 equal 0.1716 (×2).
    units = F2 / F2.norm(dim=1, keepdim=True)
    torch.testing.assert_close(
        units @ d, torch.full((2,), 2 * (3 - 2 * math.sqrt(2)), dtype=torch.float64)
    )
    d, w, _ = _run(F3)
    torch.testing.assert_close(w, torch.tensor([3.0, 3.0, -3.0], dtype=torch.float64))
    torch.testing.assert_close(d, torch.tensor([4.5, 4.5], dtype=torch.float64))
    d, w, _ = _run(F4)
    torch.testing.assert_close(w, torch.ones(3, dtype=torch.float64))
    d, w, _ = _run(F5)
    torch.testing.assert_close(w, torch.tensor([2.0, 0.0], dtype=torch.float64))


def test_single_row_zero_input_and_undefined_direction() -> None:
    g = torch.tensor([[3.0, -1.0]], dtype=torch.float64)
    torch.testing.assert_close(IMTLG()(g), g[0])
    d, w, details = _run(torch.zeros(2, 3, dtype=torch.float64))
    assert (w == 0).all() and details["sum_v"] == 0.0
    # Opposite rows of equal norms: v = K⁺n = 0, the direction is undefined → zero update.
    d, w, details = _run(torch.tensor([[1.0, 2.0], [-1.0, -2.0]], dtype=torch.float64))
    assert details["sum_v"] == 0.0
    torch.testing.assert_close(d, torch.zeros(2, dtype=torch.float64))


@given(k=st.integers(1, 6), extra=st.integers(0, 4), seed=st.integers(0, 2**32 - 1))
def test_equal_projections_on_the_unit_gradients(k: int, extra: int, seed: int) -> None:
    # For linearly independent rows the update has the same projection on every u_i, and the
    # weights sum to k (the paper's Σα = 1, scaled).
    # Rows of norms spread over six orders of magnitude: the method is impartial to them.
    rng = np.random.default_rng(seed)
    G = torch.from_numpy(rng.standard_normal((k, k + extra)))
    assume(float(torch.linalg.svdvals(G).min()) > 1e-2 * float(G.norm()))
    G = G * torch.from_numpy(10.0 ** rng.uniform(-3, 3, (k, 1)))
    d, w, details = _run(G)
    units = G / G.norm(dim=1, keepdim=True)
    projections = units @ d
    torch.testing.assert_close(
        projections, projections[0].expand(k), rtol=1e-7, atol=1e-12 * float(d.norm())
    )
    # The projections are positive, the update helps every objective, even when Σv < 0
    # (then the weights sum to −k instead of k).
    assert float(projections.min()) > 0
    sign = 1.0 if details["sum_v"] > 0 else -1.0
    assert float(w.sum()) == pytest.approx(sign * k, rel=1e-8)


def test_negative_sum_does_not_flip_the_update() -> None:
    # Three independent rows with Σv < 0: the paper's normalisation (and TorchJD) would
    # return an update that conflicts with every objective.
    rng = np.random.default_rng(335)
    G = torch.from_numpy(rng.standard_normal((3, 5)))
    G[1] *= 4.0
    d, w, details = _run(G)
    assert details["sum_v"] < 0
    assert float((G @ d).min()) > 0
    torch.testing.assert_close(w.sum(), torch.tensor(-3.0, dtype=torch.float64))


@given(seed=st.integers(0, 2**32 - 1), c=st.floats(1e-6, 1e6))
def test_scale_and_norm_invariance(seed: int, c: float) -> None:
    # Only directions matter: rescaling one row leaves the update's direction unchanged
    # (impartiality), even when its norm becomes 1e6 times another's.
    rng = np.random.default_rng(seed)
    G = torch.from_numpy(rng.standard_normal((3, 5)))
    d, _, _ = _run(G)
    H = G.clone()
    H[1] *= c
    e, _, _ = _run(H)
    torch.testing.assert_close(e / e.norm(), d / d.norm(), rtol=1e-7, atol=1e-9)
