"""SDMGrad: the specification's vectors, the inner problem's optimality, the MGDA limit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import matrices
from hypothesis import assume, given
from hypothesis import strategies as st

from gradsurgery.methods.sdmgrad import SDMGrad
from gradsurgery.solvers.simplex import min_norm_on_simplex, simplex_gap

F1 = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], dtype=torch.float64)
F2 = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)


def _report(method: SDMGrad) -> tuple[torch.Tensor, dict]:
    assert method.last_report is not None
    block = method.last_report.blocks["block"]
    return block.weights, block.details


def test_exact_vectors() -> None:
    # Paper scale (0.6, 0.4) on both fixtures; the library multiplies by k = 2.
    method = SDMGrad()
    out = method(F1)
    torch.testing.assert_close(_report(method)[0], torch.tensor([1.2, 0.8]).double())
    torch.testing.assert_close(out, torch.tensor([0.0, 2.0, 2.0]).double(), atol=1e-12, rtol=0)
    np.testing.assert_allclose(_report(method)[1]["w"], [0.63, 0.37], atol=1e-4)
    out = method(F2)
    torch.testing.assert_close(_report(method)[0], torch.tensor([1.2, 0.8]).double())
    torch.testing.assert_close(out, torch.tensor([0.4, 0.8]).double())


@pytest.mark.parametrize("lr", [5.0, 10.0])
def test_reference_loop_vectors(lr: float) -> None:
    # The reference loop jumps to the vertex w = (0, 1): (0.1154, 0.8846) at paper scale.
    for G in (F1, F2):
        method = SDMGrad(solver="reference", lr=lr)
        method(G)
        torch.testing.assert_close(
            _report(method)[0] / 2, torch.tensor([0.1154, 0.8846]).double(), atol=1e-4, rtol=0
        )


@given(G=matrices(max_k=6, max_p=6), lam=st.floats(0.0, 2.0))
def test_inner_weights_minimise_the_inner_problem(G: torch.Tensor, lam: float) -> None:
    # The defining property: w* = argmin_{w ∈ Δ} ½ (w + λ/k)ᵀ K (w + λ/k), checked by its KKT
    # gap (with K divided by its mean diagonal) and against random simplex points.
    k = G.shape[0]
    assume(float(G.norm(dim=1).max()) >= 1e-150)  # a normal (not subnormal) Gramian
    K = (G @ G.T).numpy()
    size = float(np.trace(K)) / k
    assume(size > 0)
    Kn = K / size
    method = SDMGrad(lam=lam)
    out = method(G)
    weights, details = _report(method)
    w = np.array(details["w"])
    assert w.min() >= 0 and abs(w.sum() - 1) < 1e-12
    pref = np.full(k, 1.0 / k)
    grad = Kn @ (w + lam * pref)
    assert simplex_gap(w, grad) <= 1e-10 * (np.abs(Kn).max() * (1 + lam))

    def value(v: np.ndarray) -> float:
        return 0.5 * float((v + lam * pref) @ Kn @ (v + lam * pref))

    for v in np.random.default_rng(0).dirichlet(np.ones(k), size=100):
        assert value(w) <= value(v) + 1e-10
    torch.testing.assert_close(weights, torch.from_numpy(k * (w + lam * pref) / (1 + lam)))
    torch.testing.assert_close(out, weights @ G)


@given(G=matrices(max_k=5, max_p=6), lam=st.floats(0.0, 0.5))
def test_equals_mgda_when_its_weights_are_large_enough(G: torch.Tensor, lam: float) -> None:
    k = G.shape[0]
    assume(float(G.norm(dim=1).max()) >= 1e-150)  # a normal (not subnormal) Gramian
    K = (G @ G.T).numpy()
    assume(float(np.trace(K)) > 0)
    mgda, _ = min_norm_on_simplex(K / (np.trace(K) / k))
    assume(bool((mgda > lam / (k * (1 + lam)) + 1e-6).all()))
    expected = k * (torch.from_numpy(mgda) @ G)
    scale = float(G.abs().max()) * k
    torch.testing.assert_close(SDMGrad(lam=lam)(G), expected, rtol=1e-6, atol=1e-6 * scale)


def test_identical_rows() -> None:
    F4 = torch.tensor([[3.0, 4.0]] * 3, dtype=torch.float64)
    torch.testing.assert_close(SDMGrad()(F4), 3 * F4[0])
    torch.testing.assert_close(SDMGrad(solver="reference")(F4), 3 * F4[0])


def test_reference_state_round_trip() -> None:
    gen = torch.Generator().manual_seed(2)
    inputs = [torch.randn(3, 4, generator=gen, dtype=torch.float64) for _ in range(5)]
    first = SDMGrad(solver="reference")
    for G in inputs[:2]:
        first(G)
    second = SDMGrad(solver="reference")
    second.load_state_dict(first.state_dict())
    for G in inputs[2:]:
        torch.testing.assert_close(first(G), second(G), rtol=0, atol=0)
    # The warm start matters: a fresh loop gives another result on the same input.
    assert not torch.equal(SDMGrad(solver="reference")(inputs[4]), first(inputs[4]))


def test_bad_hyperparameters() -> None:
    for kwargs in ({"lam": -0.1}, {"solver": "sgd"}, {"lr": 0.0}, {"momentum": 1.0}, {"n_iter": 0}):
        with pytest.raises(ValueError):
            SDMGrad(**kwargs)
