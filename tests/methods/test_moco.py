"""MoCo: the specification's λ step, the tracking recursion, convergence to MGDA, state."""

from __future__ import annotations

import math

import numpy as np
import torch
from helpers import matrices
from hypothesis import assume, given
from hypothesis import strategies as st

from gradsurgery.methods.moco import MoCo, moco_lambda_step
from gradsurgery.solvers.simplex import project_onto_simplex

F2 = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)


def test_spec_lambda_step() -> None:
    # The specification's LibMTL-form vector: with Y = [[0.5, 0], [−0.3536, 0.3536]], YYᵀλ
    # has equal entries at λ = 1/2, so λ stays (0.5, 0.5) and Yᵀλ = (0.0732, 0.1768).
    Y = np.array([[0.5, 0.0], [-1 / (2 * math.sqrt(2)), 1 / (2 * math.sqrt(2))]])
    lam = moco_lambda_step(Y @ Y.T, np.array([0.5, 0.5]), gamma=0.1, rho=0.0)
    np.testing.assert_allclose(lam, [0.5, 0.5], rtol=0, atol=1e-15)
    np.testing.assert_allclose(Y.T @ lam, [0.0732, 0.1768], atol=1e-4)


def _reference(inputs: list[np.ndarray], beta: float, gamma: float, rho: float) -> list[np.ndarray]:
    """The update rule written over the P coordinates, step by step."""
    out = []
    Y = inputs[0].copy()
    k = Y.shape[0]
    lam = np.full(k, 1.0 / k)
    for t, G in enumerate(inputs, start=1):
        if t > 1:
            Y = Y - beta / math.sqrt(t) * (Y - G)
        K = Y @ Y.T
        s = np.trace(K) / k
        Kn = K / s if s > 0 else K
        lam = project_onto_simplex(lam - gamma / math.sqrt(t) * (Kn @ lam + rho * lam))
        out.append(k * lam @ Y)
    return out


@given(
    data=st.data(),
    k=st.integers(1, 4),
    beta=st.floats(0.0, 1.0),
    gamma=st.floats(0.0, 2.0),
    rho=st.floats(0.0, 1.0),
)
def test_tracks_and_steps_as_defined(
    data: st.DataObject, k: int, beta: float, gamma: float, rho: float
) -> None:
    # The defining recursion, σ_β = σ_γ = 0.5: y ← y − β_t (y − g), λ ← Π(λ − γ_t(YYᵀ/s + ρ)λ).
    inputs = [data.draw(matrices(k=k, max_p=4)) for _ in range(3)]
    p = inputs[0].shape[1]
    inputs = [
        G[:, :p] if G.shape[1] >= p else torch.nn.functional.pad(G, (0, p - G.shape[1]))
        for G in inputs
    ]
    # Domain: normal (not subnormal) Gramians, or exact zeros.
    largest = [float(G.abs().max()) for G in inputs]
    assume(all(m == 0 or m >= 1e-150 for m in largest))
    method = MoCo(beta=beta, gamma=gamma, rho=rho)
    expected = _reference([G.numpy() for G in inputs], beta, gamma, rho)
    for G, want in zip(inputs, expected):
        got = method(G).numpy()
        scale = max(float(np.abs(G.numpy()).max()) for G in inputs) * k + 1e-12
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * scale)


def test_converges_to_the_min_norm_direction() -> None:
    # On a fixed problem Y = G and the λ iteration is projected gradient on MGDA's problem:
    # F2's min-norm weights are (0.6, 0.4).
    method = MoCo()
    for _ in range(3000):
        method(F2)
    assert method.last_report is not None
    lam = method.last_report.blocks["block"].details["lambda"]
    np.testing.assert_allclose(lam, [0.6, 0.4], atol=1e-3)


@given(G=matrices(max_k=5), data=st.data())
def test_permutation_equivariant_over_several_steps(G: torch.Tensor, data: st.DataObject) -> None:
    # Two fresh instances, one fed permuted rows (with permuted names), agree step by step.
    k = G.shape[0]
    perm = data.draw(st.permutations(range(k)))
    names = [f"t{i}" for i in range(k)]
    a, b = MoCo(), MoCo()
    scale = float(G.abs().max()) * k + 1e-12
    for step in range(3):
        H = G * (1 + step) - step
        out_a = a(H, objectives=names)
        out_b = b(H[list(perm)], objectives=[names[i] for i in perm])
        torch.testing.assert_close(out_a, out_b, rtol=1e-9, atol=1e-9 * scale)


def test_tracks_follow_objective_names_and_restart_on_new_ones() -> None:
    gen = torch.Generator().manual_seed(0)
    A, B = (torch.randn(3, 4, generator=gen, dtype=torch.float64) for _ in range(2))
    a, b = MoCo(), MoCo()
    a(A, objectives=["x", "y", "z"])
    b(A, objectives=["x", "y", "z"])
    torch.testing.assert_close(
        a(B, objectives=["x", "y", "z"]), b(B[[2, 0, 1]], objectives=["z", "x", "y"])
    )
    c, fresh = MoCo(), MoCo()
    c(A, objectives=["x", "y", "z"])
    c._step, fresh._step = 5, 5  # same step sizes: only the tracks differ
    torch.testing.assert_close(
        c(B, objectives=["u", "v", "w"]), fresh(B, objectives=["u", "v", "w"])
    )


def test_identical_rows_and_state_round_trip() -> None:
    g = torch.tensor([3.0, -4.0], dtype=torch.float64)
    method = MoCo()
    for _ in range(3):
        torch.testing.assert_close(method(g.expand(3, -1).clone()), 3 * g)
    gen = torch.Generator().manual_seed(1)
    inputs = [torch.randn(3, 5, generator=gen, dtype=torch.float32) for _ in range(6)]
    first = MoCo()
    for G in inputs[:3]:
        first(G)
    second = MoCo()
    second.load_state_dict(first.state_dict())
    for G in inputs[3:]:
        torch.testing.assert_close(first(G), second(G), rtol=0, atol=0)
    first.reset()
    fresh = MoCo()
    for G in inputs:
        torch.testing.assert_close(first(G), fresh(G), rtol=0, atol=0)
