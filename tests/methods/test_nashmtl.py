"""Nash-MTL: the specification's vectors, the bargaining condition αᵢ(Kα)ᵢ = 1, and state."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import matrices
from hypothesis import assume, given

from gradsurgery.methods.nashmtl import NashMTL
from gradsurgery.solvers.simplex import min_norm_on_simplex

F1 = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], dtype=torch.float64)
F2 = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
F3 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-0.5, -0.5]], dtype=torch.float64)


def _details(method: NashMTL) -> dict:
    assert method.last_report is not None
    return method.last_report.blocks["block"].details


def _weights(method: NashMTL) -> torch.Tensor:
    assert method.last_report is not None
    return method.last_report.blocks["block"].weights


def test_f1_unclipped_and_clipped() -> None:
    method = NashMTL(max_norm=None)
    out = method(F1)
    torch.testing.assert_close(
        _weights(method), torch.tensor([0.5915, 0.4071]).double(), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(
        out, torch.tensor([0.0766, 0.9985, 0.9985]).double(), atol=1e-4, rtol=0
    )
    assert float(out.norm()) == pytest.approx(math.sqrt(2), rel=1e-10)
    alpha = np.array(_details(method)["alpha"])
    K = (F1 @ F1.T).numpy()
    assert np.abs(K @ alpha - 1 / alpha).max() < 1e-12
    clipped = NashMTL()
    out = clipped(F1)
    torch.testing.assert_close(
        _weights(clipped), torch.tensor([0.4182, 0.2878]).double(), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(
        out, torch.tensor([0.0542, 0.7061, 0.7061]).double(), atol=1e-4, rtol=0
    )
    assert float(out.norm()) == pytest.approx(1.0, rel=1e-12)


def test_f2_unclipped_and_clipped() -> None:
    method = NashMTL(max_norm=None)
    out = method(F2)
    torch.testing.assert_close(
        _weights(method), torch.tensor([1.8478, 1.3066]).double(), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(out, torch.tensor([0.5412, 1.3066]).double(), atol=1e-4, rtol=0)
    alpha = np.array(_details(method)["alpha"])
    K = (F2 @ F2.T).numpy()
    assert np.abs(K @ alpha - 1 / alpha).max() < 1e-12
    torch.testing.assert_close(
        NashMTL()(F2), torch.tensor([0.3827, 0.9239]).double(), atol=1e-4, rtol=0
    )


def test_identical_rows_paper_and_sum_scale() -> None:
    F4 = torch.tensor([[3.0, 4.0]] * 3, dtype=torch.float64)
    method = NashMTL(max_norm=None)
    out = method(F4)
    # α_i = 1/(‖g‖√k) and d = √k·g/‖g‖.
    torch.testing.assert_close(_weights(method), torch.full((3,), 1 / (5 * math.sqrt(3))).double())
    torch.testing.assert_close(out, math.sqrt(3) * F4[0] / 5)
    torch.testing.assert_close(NashMTL(normalize="sum")(F4), 3 * F4[0])
    # k = 1: α = 1/‖g‖, d = ĝ.
    torch.testing.assert_close(NashMTL()(F4[:1]), F4[0] / 5)


def test_pareto_stationary_rows_give_zero() -> None:
    for G in (F3, torch.tensor([[1.0, 0.0], [0.0, 0.0]]).double(), torch.zeros(2, 3).double()):
        method = NashMTL()
        torch.testing.assert_close(method(G), torch.zeros(G.shape[1]).double())
        assert _details(method)["feasible"] is False
        assert _details(method)["alpha"] is None


def _feasible(G: torch.Tensor) -> bool:
    # Domain: rows whose squared norms are normal float64 numbers (an all-tiny block has a
    # subnormal Gramian, which has lost its precision before any method sees it).
    if float(G.norm(dim=1).max()) < 1e-150:
        return False
    K = (G @ G.T).numpy()
    size = float(np.trace(K)) / K.shape[0]
    return size > 0 and min_norm_on_simplex(K / size)[1] > 1e-6


@given(G=matrices(max_k=5, max_p=6))
def test_bargaining_condition(G: torch.Tensor) -> None:
    # The defining property: α > 0 with α_i (Kα)_i = 1, so d·g_i = 1/α_i > 0 and ‖d‖² = k.
    assume(_feasible(G))
    method = NashMTL(max_norm=None)
    d = method(G).numpy()
    details = _details(method)
    assert details["converged"]
    alpha = np.array(details["alpha"])
    g = G.numpy()
    assert (alpha > 0).all()
    np.testing.assert_allclose(alpha * (g @ d), 1.0, rtol=0, atol=1e-8)
    assert float(d @ d) == pytest.approx(G.shape[0], rel=1e-8)


@given(G=matrices(max_k=5, max_p=6))
def test_clip_and_sum_are_rescalings_of_alpha(G: torch.Tensor) -> None:
    assume(_feasible(G))
    k = G.shape[0]
    free = NashMTL(max_norm=None)
    free(G)
    alpha = _weights(free)
    clipped = NashMTL(max_norm=0.5)
    out = clipped(G)
    assert float(out.norm()) == pytest.approx(min(0.5, math.sqrt(k)), rel=1e-8)
    torch.testing.assert_close(
        _weights(clipped), alpha * min(1.0, 0.5 / math.sqrt(k)), rtol=1e-8, atol=0
    )
    summed = NashMTL(normalize="sum")
    summed(G)
    torch.testing.assert_close(_weights(summed), k * alpha / alpha.sum(), rtol=1e-8, atol=0)


def test_update_weights_every_reuses_alpha() -> None:
    gen = torch.Generator().manual_seed(0)
    A, B = (torch.randn(3, 5, generator=gen, dtype=torch.float64) for _ in range(2))
    method = NashMTL(update_weights_every=2, max_norm=None)
    method(A)
    first = _weights(method).clone()
    method(B)  # reuses A's α
    torch.testing.assert_close(_weights(method), first, rtol=0, atol=0)
    assert _details(method)["reused"] is True
    method(B)  # solves again
    assert _details(method)["reused"] is False
    torch.testing.assert_close(_weights(method), _weights_of(B), rtol=1e-8, atol=0)


def _weights_of(G: torch.Tensor) -> torch.Tensor:
    method = NashMTL(max_norm=None)
    method(G)
    return _weights(method)


def test_state_round_trip_and_reordered_objectives() -> None:
    gen = torch.Generator().manual_seed(1)
    inputs = [torch.randn(3, 6, generator=gen, dtype=torch.float64) for _ in range(4)]
    first = NashMTL(update_weights_every=2)
    first(inputs[0])
    second = NashMTL(update_weights_every=2)
    second.load_state_dict(first.state_dict())
    for G in inputs[1:]:
        torch.testing.assert_close(first(G), second(G), rtol=0, atol=0)
    # The reused α follows the objectives' names when the rows come in another order.
    a, b = NashMTL(update_weights_every=2), NashMTL(update_weights_every=2)
    a(inputs[0], objectives=["x", "y", "z"])
    b(inputs[0], objectives=["x", "y", "z"])
    perm = [2, 0, 1]
    torch.testing.assert_close(
        a(inputs[1], objectives=["x", "y", "z"]),
        b(inputs[1][perm], objectives=["z", "x", "y"]),
        rtol=0,
        atol=1e-12,
    )


def test_bad_hyperparameters() -> None:
    for kwargs in ({"max_norm": 0.0}, {"update_weights_every": 0}, {"normalize": "mean"}):
        with pytest.raises(ValueError):
            NashMTL(**kwargs)
    with pytest.raises(TypeError):
        NashMTL(update_weights_every=1.0)  # type: ignore[arg-type]
