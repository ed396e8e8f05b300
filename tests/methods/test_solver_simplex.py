"""Simplex solvers: KKT conditions up to k = 32 (float32 and float64 data), and CAGrad's
non-conflict guarantee for c ≥ 1 on large random matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import gradsurgery as gs
from gradsurgery.solvers.simplex import (
    DEFAULT_TOL,
    min_norm_on_simplex,
    minimize_on_simplex,
    minimize_quadratic_on_simplex,
    project_onto_simplex,
    simplex_gap,
)


@st.composite
def problems(draw: st.DrawFn, max_k: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``(G, c)``: ``k`` rows of very different norms (some zero, often ``k > P``), stored
    in float32 or float64, and a linear term."""
    k = draw(st.integers(2, max_k))
    p = draw(st.integers(1, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    G = rng.standard_normal((k, p)) * 10.0 ** rng.uniform(-3, 3, size=(k, 1))
    if draw(st.booleans()):
        G[rng.integers(k)] = 0.0
    if draw(st.booleans()):
        G = G.astype(np.float32)
    c = rng.standard_normal(k) * 10.0 ** rng.uniform(-3, 3) if draw(st.booleans()) else np.zeros(k)
    return G, c


def _gramian(G: np.ndarray) -> np.ndarray:
    # As the library does: the float32 rows' Gramian, accumulated in their dtype.
    return np.asarray(G @ G.T, dtype=np.float64)


@given(y=st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=32), r=st.floats(0.1, 10.0))
def test_projection_onto_simplex(y: list[float], r: float) -> None:
    x = project_onto_simplex(np.array(y), r)
    assert x.min() >= 0 and x.sum() == pytest.approx(r, rel=1e-12)
    # KKT of min ½‖x − y‖²: x − y = θ on the support, x − y ≥ θ off it (θ the multiplier).
    diff = x - np.array(y)
    support = x > 0
    theta = diff[support].mean()
    scale = 1.0 + float(np.abs(y).max())
    np.testing.assert_allclose(diff[support], theta, atol=1e-12 * scale)
    assert (diff[~support] >= theta - 1e-12 * scale).all()


@given(problem=problems())
def test_quadratic_solver_meets_the_kkt_tolerance(problem: tuple[np.ndarray, np.ndarray]) -> None:
    G, c = problem
    Q = _gramian(G)
    x, ok = minimize_quadratic_on_simplex(Q, c)
    assert ok
    assert x.min() >= 0 and abs(x.sum() - 1) < 1e-12
    grad = Q @ x + c
    scale = float(np.abs(Q).max() + np.abs(c).max())
    # Complementary slackness, dual feasibility with multipliers g_i − min g is exact.
    assert simplex_gap(x, grad) <= DEFAULT_TOL * scale
    # And the value: no vertex does better (the gap bounds q(x) − min q).
    value = 0.5 * x @ Q @ x + c @ x
    vertices = 0.5 * np.diag(Q) + c
    assert value <= vertices.min() + DEFAULT_TOL * scale


@given(problem=problems())
def test_min_norm_point(problem: tuple[np.ndarray, np.ndarray]) -> None:
    G, _ = problem
    K = _gramian(G)
    w, value = min_norm_on_simplex(K)
    # MGDA's characterisation: d = Gᵀw has d·g_i ≥ ‖d‖² for every row (to the tolerance).
    d = w @ G.astype(np.float64)
    assert value == max(float(w @ K @ w), 0.0)
    assert (K @ w >= float(w @ K @ w) - DEFAULT_TOL * np.abs(K).max()).all()
    # The Gramian carries the rows' rounding (float32 rows: their float32 products).
    rounding = 8 * np.finfo(G.dtype).eps * np.abs(K).max()
    assert d @ d == pytest.approx(value, rel=1e-6, abs=rounding)


def _cagrad_objective(K: np.ndarray, c: float) -> tuple:
    k = K.shape[0]
    Kn = K / (np.trace(K) / k)
    b = np.full(k, 1.0 / k)
    Kb = Kn @ b
    radius = c * np.sqrt(b @ Kn @ b)

    def fun(w: np.ndarray) -> float:
        return float(w @ Kb + radius * np.sqrt(max(float(w @ Kn @ w), 0.0)))

    def jac(w: np.ndarray) -> np.ndarray:
        gw = Kn @ w
        return Kb + radius * gw / np.sqrt(float(w @ gw))

    def hess(w: np.ndarray) -> np.ndarray:
        gw = Kn @ w
        n = np.sqrt(float(w @ gw))
        return radius / n * (Kn - np.outer(gw, gw) / n**2)

    return fun, jac, hess, Kn


@given(problem=problems(), c=st.sampled_from([0.2, 0.5, 0.9, 1.0, 2.0]))
def test_cagrad_dual_meets_the_kkt_tolerance(
    problem: tuple[np.ndarray, np.ndarray], c: float
) -> None:
    # CAGrad's dual min_w g_wᵀg_0 + c‖g_0‖‖g_w‖ (as CAGrad poses it) on problems where it is
    # smooth: the rows' convex hull stays away from 0 (min-norm point of norm ≥ 1e-3).
    G, _ = problem
    G[np.all(G == 0, axis=1)] = 1.0
    K = _gramian(G)
    fun, jac, hess, Kn = _cagrad_objective(K, c)
    if min_norm_on_simplex(Kn)[1] < 1e-3:
        G = np.abs(G)  # move the rows into one orthant: the hull no longer reaches 0
        K = _gramian(G)
        fun, jac, hess, Kn = _cagrad_objective(K, c)
    k = K.shape[0]
    w, ok = minimize_on_simplex(fun, jac, k, hess=hess)
    assert ok
    assert w.min() >= 0 and abs(w.sum() - 1) < 1e-12
    grad = jac(w)
    assert simplex_gap(w, grad) <= DEFAULT_TOL * max(
        np.abs(grad).max(), np.abs(jac(np.full(k, 1 / k))).max()
    )


@given(seed=st.integers(0, 2**32 - 1), k=st.integers(3, 12))
def test_general_solver_without_hessian(seed: int, k: int) -> None:
    # A smooth convex non-quadratic objective, BFGS model: log-sum-exp plus a quadratic.
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((k, 5))
    K, b = A @ A.T, 3 * rng.standard_normal(k)

    def fun(w: np.ndarray) -> float:
        return float(np.log(np.exp(b * w).sum()) + 0.5 * w @ K @ w)

    def jac(w: np.ndarray) -> np.ndarray:
        e = np.exp(b * w)
        return b * e / e.sum() + K @ w

    w, ok = minimize_on_simplex(fun, jac, k)
    assert ok
    start = np.abs(jac(np.full(k, 1.0 / k))).max()
    assert simplex_gap(w, jac(w)) <= DEFAULT_TOL * max(np.abs(jac(w)).max(), start)


# -- CAGrad, c = 1: non-conflicting ----------------------------------------------------------


def _orthonormal(n: int, rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return q


def _matrix(kind: str, m: int, n: int, rank: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``m x n`` matrix of the given rank and stationarity kind.

    * ``normal``: generic;
    * ``non_weak``: the positive unit vector u is a left singular vector (so no non-negative
      combination of the rows vanishes);
    * ``strong``: the rows are orthogonal to a positive vector v (vᵀA = 0: strongly
      stationary);
    * ``weak``: vᵀA = 0 for a non-negative v with zeros, and no positive combination vanishes.
    """
    singular = np.abs(rng.standard_normal(rank))
    V = _orthonormal(n, rng)[:rank]
    if kind == "normal":
        U = _orthonormal(m, rng)[:, :rank]
    else:
        u = np.abs(rng.standard_normal(m))
        if kind == "weak":
            split = rng.permutation(m)
            half = split[: m // 2]
            v, v2 = np.zeros(m), np.zeros(m)
            v[half], v2[split[m // 2 :]] = u[half], u[split[m // 2 :]]
            first = np.stack([v / np.linalg.norm(v), v2 / np.linalg.norm(v2)], axis=1)
        else:
            first = (u / np.linalg.norm(u))[:, None]
        rest = rng.standard_normal((m, m - first.shape[1]))
        rest -= first @ (first.T @ rest)
        rest, _ = np.linalg.qr(rest)
        basis = np.concatenate([first, rest], axis=1)
        if kind == "non_weak":
            U = basis[:, :rank]
        elif kind == "strong":
            U = basis[:, 1 : rank + 1]
        else:  # weak: orthogonal to v, keeping v2 (a non-negative left singular vector)
            U = basis[:, 1 : rank + 1]
    return (U * singular) @ V


def _check_non_conflicting(J: torch.Tensor) -> None:
    d = gs.CAGrad(c=1.0)(J)
    products = (J.double() @ d.double()).numpy()
    # TorchJD's criterion: the positive part of Jd carries its whole norm.
    positive = np.linalg.norm(products[products >= 0])
    assert positive == pytest.approx(np.linalg.norm(products), rel=4e-4, abs=4e-4)
    # And the stronger one: every row's product is non-negative up to rounding (relative to
    # the rows' and the update's scale: on stationary rows the update itself may be ~0).
    size = max(float(d.double().norm()), float(J.double().sum(0).norm()))
    assert products.min() >= -1e-6 * float(J.double().norm(dim=1).max()) * size


SHAPES = [(20, 10, 10), (20, 10, 5), (20, 10, 1), (20, 100, 1), (20, 100, 19)]
DTYPES = [torch.float32, torch.float64]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize(("m", "n", "rank"), SHAPES)
@pytest.mark.parametrize("kind", ["non_weak"])
@pytest.mark.parametrize("seed", range(3))
def test_cagrad_c1_is_non_conflicting(
    kind: str, m: int, n: int, rank: int, dtype: torch.dtype, seed: int
) -> None:
    rng = np.random.default_rng([seed, m, n, rank])
    _check_non_conflicting(torch.from_numpy(_matrix(kind, m, n, rank, rng)).to(dtype))


@pytest.mark.parametrize("kind", ["strong", "weak"])
def test_cagrad_c1_is_non_conflicting_on_stationary_rows(kind: str) -> None:
    failures = 0
    for seed in range(3):
        for m, n, rank in SHAPES:
            rng = np.random.default_rng([seed, m, n, rank])
            J = torch.from_numpy(_matrix(kind, m, n, rank, rng))
            try:
                _check_non_conflicting(J)
            except AssertionError:
                failures += 1
    assert failures == 0
