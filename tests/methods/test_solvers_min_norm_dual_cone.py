"""The min-norm and dual-cone solvers meet their stated KKT tolerances (k up to 32, float64
and float32 Gramians, rank-deficient and conflicting rows), checked by code independent of
the solvers', and agree with SciPy's general-purpose solvers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import matrices
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import minimize

from gradsurgery.solvers import dual_cone, min_norm
from gradsurgery.solvers.dual_cone import dual_cone_kkt_residual, project_to_dual_cone
from gradsurgery.solvers.linalg import RANK_RTOL, kept_eigenpairs, pinv_apply
from gradsurgery.solvers.min_norm import frank_wolfe, min_norm_kkt_residual, min_norm_point
from gradsurgery.solvers.nonnegative import psd_part, solve_nonnegative_qp

TOL = 1e-10
assert min_norm.KKT_TOL == TOL and dual_cone.KKT_TOL == TOL

KINDS = ("dense", "low_rank", "conflicting", "opposite", "scales", "duplicates", "integer")


@st.composite
def hard_gramians(
    draw: st.DrawFn, max_k: int = 32, dtypes: tuple[type, ...] = (np.float64, np.float32)
) -> tuple[np.ndarray, np.ndarray]:
    """``(G, K)``: rows of one of several hard kinds and their Gramian, computed in the
    drawn dtype (float64 or float32) as the library does for rows of that dtype."""
    k = draw(st.integers(1, max_k))
    p = draw(st.integers(1, 40))
    kind = draw(st.sampled_from(KINDS))
    dtype = draw(st.sampled_from(dtypes))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    G = rng.standard_normal((k, p))
    half = k // 2
    if kind == "low_rank":
        r = draw(st.integers(1, 4))
        G = rng.standard_normal((k, r)) @ rng.standard_normal((r, p))
    elif kind == "conflicting" and half:
        # Nearly opposite pairs: a thin dual cone and a min-norm point near the origin.
        G[half : 2 * half] = -G[:half] * rng.uniform(0.1, 3.0, (half, 1))
        G[half : 2 * half] += 1e-3 * rng.standard_normal((half, p))
    elif kind == "opposite" and half:
        G[half : 2 * half] = -G[:half] * rng.uniform(0.1, 3.0, (half, 1))  # Pareto-stationary
    elif kind == "scales":
        G *= 10.0 ** rng.uniform(-8, 8, (k, 1))
    elif kind == "duplicates":
        G = G[rng.integers(0, max(1, half), k)]
    elif kind == "integer":
        G = rng.integers(-2, 3, (k, p)).astype(np.float64)  # many exact ties
    zeros = draw(st.integers(0, min(2, k - 1)))
    G[rng.permutation(k)[:zeros]] = 0.0
    Gd = torch.from_numpy(G.astype(dtype))
    K = Gd @ Gd.T
    return G.astype(dtype).astype(np.float64), ((K + K.T) / 2).numpy()  # as compute_gramian


def _nu(A: np.ndarray) -> float:
    """How far a symmetric matrix is from PSD: ``max(0, −λ_min)``."""
    A = A.astype(np.float64)
    return max(0.0, -float(np.linalg.eigvalsh((A + A.T) / 2)[0])) if A.size else 0.0


def _min_norm_residual(K: np.ndarray, w: np.ndarray) -> float:
    """MGDA's KKT residual, written independently of the solver's module."""
    Kn = K.astype(np.float64) / float(np.diagonal(K).max())
    Kw = Kn @ w
    s = Kw - float(w @ Kw)
    return max(0.0, float(-s.min()), float(np.abs(s[w > 0]).max(initial=0.0)))


def _dual_cone_residual(K: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    """The dual-cone KKT residual on the unit rows (independently of the solver), and ``ν``
    of their cosine matrix."""
    K = K.astype(np.float64)
    n = np.sqrt(np.clip(np.diagonal(K), 0.0, None))
    nz = n > 0
    C = K[np.ix_(nz, nz)] / np.outer(n[nz], n[nz])
    size = float(np.abs(u[nz] * n[nz]).max(initial=0.0)) or 1.0
    un, vn = u[nz] * n[nz] / size, v[nz] * n[nz] / size
    z = vn - un
    s = C @ vn
    worst = max(0.0, float(-z.min(initial=0.0)), float(-s.min(initial=0.0)))
    worst = max(worst, float(np.abs(s[z > 0]).max(initial=0.0)))
    return worst / max(1.0, float(np.abs(vn).sum())), _nu(C)


# -- the non-negative QP core ---------------------------------------------------------------


@given(data=st.data())
def test_nonnegative_qp_meets_kkt_and_warm_starts_agree(data: st.DataObject) -> None:
    # The core's statement is for PSD input; float32 Gramians are covered below, via ν.
    _, K = data.draw(hard_gramians(max_k=16, dtypes=(np.float64,)))
    scale = float(np.diagonal(K).max())
    if scale <= 0:
        return
    H, _ = psd_part(K / scale)
    # b in the range of H, so that the problem is bounded (b = Aᵀc in least-squares terms).
    b = H @ np.random.default_rng(0).standard_normal(K.shape[0])
    result = solve_nonnegative_qp(H, b)
    assert result.converged
    x = result.x
    r = b - H @ x
    size = 1.0 + float(np.abs(b).max()) + float(np.abs(x).sum())
    assert x.min() >= 0
    assert np.abs(r[x > 0]).max(initial=0.0) <= 1e-10 * size
    if result.dependent:
        # A column within a relative pivot of 1e-13 of the passive ones' span was left out
        # (a near-dependent column, or one 1e6 times shorter than the longest): beyond what
        # the method resolves, so nothing more is claimed.
        return
    assert r.max() <= 1e-10 * size
    # Starting from any guess of the passive set reaches an optimum with the same value.
    start = data.draw(st.lists(st.booleans(), min_size=len(b), max_size=len(b)))
    warm = solve_nonnegative_qp(H, b, start=np.array(start))

    def value(y: np.ndarray) -> float:
        return 0.5 * float(y @ H @ y) - float(b @ y)

    assert warm.converged and warm.x.min() >= 0
    if not warm.dependent:
        warm_size = 1.0 + float(np.abs(b).max()) + float(np.abs(warm.x).sum())
        assert (b - H @ warm.x).max() <= 1e-10 * warm_size
        assert value(warm.x) == pytest.approx(value(x), rel=1e-9, abs=1e-9 * size)


def test_a_warm_start_on_a_near_null_column_does_not_hide_an_improvement() -> None:
    # Index 1's column is 1e-20 long: a warm start on it puts x₁ = 1e10. A convergence test
    # through ‖x‖₁ then read index 0's r = 5e-5 as rounding and stopped at a point that is
    # not optimal, without a word; now the index enters, and the dependent block is flagged.
    H = np.diag([1.0, 1e-20, 1.0])
    b = np.array([5e-5, 1e-10, -1.0])
    warm = solve_nonnegative_qp(H, b, start=np.array([False, True, False]))
    assert warm.converged
    assert warm.dependent or (b - H @ warm.x).max() <= 1e-12


def test_psd_part_clips_only_negative_eigenvalues() -> None:
    A = np.diag([1.0, 0.5, -1e-6])
    out, nu = psd_part(A)
    assert nu == pytest.approx(1e-6)
    np.testing.assert_allclose(out, np.diag([1.0, 0.5, 0.0]), atol=1e-15)
    B = np.diag([1.0, 0.0])
    assert psd_part(B)[0] is B


# -- min-norm point ---------------------------------------------------------------------------


@given(data=st.data())
def test_min_norm_point_meets_the_stated_kkt_tolerance(data: st.DataObject) -> None:
    G, K = data.draw(hard_gramians())
    result = min_norm_point(K)
    w = result.weights
    assert result.converged
    assert w.min() >= 0 and abs(w.sum() - 1) <= 1e-12
    if np.diagonal(K).max() <= 0:
        return
    nu = _nu(K.astype(np.float64) / float(np.diagonal(K).max()))
    residual = _min_norm_residual(K, w)
    # The stated exception: rows left out as numerically dependent (within ~3e-7).
    assert residual <= TOL + 2 * nu + (1e-6 if result.dependent else 0.0)
    assert result.kkt_residual == pytest.approx(residual, abs=1e-15)
    # In gradient space: d·g_i ≥ ‖d‖² for every row (MGDA's common-descent property), up to
    # the tolerance and the rounding of K (float32 Gramians differ from G Gᵀ by ~1e-7).
    d = G.T @ w
    top = float(np.diagonal(K).max())
    rounding = float(np.abs(K - G @ G.T).max()) / top
    slack = TOL + 2 * nu + 2 * rounding + 1e-13 + (1e-6 if result.dependent else 0.0)
    assert (G @ d >= d @ d - slack * top).all()


@given(data=st.data())
def test_min_norm_point_beats_slsqp_and_frank_wolfe(data: st.DataObject) -> None:
    _, K = data.draw(hard_gramians(max_k=12))
    k = K.shape[0]
    scale = float(np.diagonal(K).max())
    if scale <= 0 or k == 1:
        return
    Kn = K.astype(np.float64) / scale
    result = min_norm_point(K)
    ours = result.weights
    slsqp = minimize(
        lambda w: float(w @ Kn @ w),
        np.full(k, 1.0 / k),
        jac=lambda w: 2 * Kn @ w,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * k,
        constraints=({"type": "eq", "fun": lambda w: w.sum() - 1.0},),
        options={"ftol": 1e-15, "maxiter": 500},
    ).x
    slsqp = np.clip(slsqp, 0, None) / np.clip(slsqp, 0, None).sum()
    fw = frank_wolfe(K, epsilon=1e-6, max_iters=1000).weights
    best = float(ours @ Kn @ ours)
    nu = _nu(Kn)
    # The KKT residual r bounds the suboptimality: f(w) − f* ≤ 2 max_i (wᵀKw − (Kw)_i) ≤ 2r,
    # with r within the stated tolerance (or its stated exception, rows left out as dependent).
    bound = TOL + 2 * nu + (1e-6 if result.dependent else 0.0)
    for other in (slsqp, fw, np.eye(k)[int(np.argmin(np.diagonal(Kn)))]):
        assert best <= float(other @ Kn @ other) + 2 * bound + 1e-15


@given(G=matrices(max_k=6), c=st.floats(1e-8, 1e8))
def test_min_norm_point_ignores_the_scale(G: torch.Tensor, c: float) -> None:
    K = (G @ G.T).numpy()
    a = G.T.numpy() @ min_norm_point(K).weights
    b = G.T.numpy() @ min_norm_point(c * c * K).weights
    np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-7 * float(G.abs().max()))


def test_min_norm_hand_vectors() -> None:
    F1 = np.array([[18.0, -22.0], [-22.0, 38.0]])
    np.testing.assert_allclose(min_norm_point(F1).weights, [0.6, 0.4], atol=1e-14)
    F3 = np.array([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5], [-0.5, -0.5, 0.5]])
    np.testing.assert_allclose(min_norm_point(F3).weights, [0.25, 0.25, 0.5], atol=1e-14)
    # Parallel rows (1, 0), (2, 0): the vertex, not Sener's clamped (0.999, 0.001).
    np.testing.assert_array_equal(
        min_norm_point(np.array([[1.0, 2.0], [2.0, 4.0]])).weights, [1, 0]
    )
    np.testing.assert_array_equal(min_norm_point(np.zeros((3, 3))).weights, np.full(3, 1 / 3))


def test_kkt_residual_detects_a_wrong_point() -> None:
    F1 = np.array([[18.0, -22.0], [-22.0, 38.0]])
    assert min_norm_kkt_residual(F1, np.array([0.5, 0.5])) > 0.1
    assert min_norm_kkt_residual(F1, np.array([0.6, 0.4])) < 1e-15
    assert dual_cone_kkt_residual(F1, np.array([1.0, 0.0]), np.array([1.0, 0.0])) > 0.1


@given(data=st.data())
def test_frank_wolfe_gap_bounds_its_suboptimality(data: st.DataObject) -> None:
    # Frank-Wolfe meets no KKT tolerance, but it must stop at a point whose Frank-Wolfe gap
    # bounds its distance to the optimum: for f(w) = wᵀKw, f(w) − f* ≤ ∇f(w)·(w − e_t)
    # = 2 (wᵀKw − min_i (Kw)_i) by convexity (if K is PSD; ν covers float32 rounding).
    _, K = data.draw(hard_gramians(max_k=16))
    result = frank_wolfe(K)
    w = result.weights
    assert w.min() >= 0 and abs(w.sum() - 1) <= 1e-12
    exact = min_norm_point(K).weights
    Kw = K @ w
    gap = float(w @ Kw - Kw.min())
    scale = float(np.abs(K).max()) + 1e-300
    nu = _nu(K.astype(np.float64) / scale)
    assert float(w @ K @ w) - float(exact @ K @ exact) <= 2 * gap + (1e-12 + 4 * nu) * scale


# -- dual-cone projection ------------------------------------------------------------------


@given(data=st.data())
def test_dual_cone_projection_meets_the_stated_kkt_tolerance(data: st.DataObject) -> None:
    _, K = data.draw(hard_gramians())
    k = K.shape[0]
    rng = np.random.default_rng(data.draw(st.integers(0, 100)))
    # The UPGrad rows (e_i), the DualProj sum (1) and random non-negative preferences.
    U = np.vstack([np.eye(k)[: min(k, 8)], np.ones(k), rng.uniform(0, 2, (2, k))])
    result = project_to_dual_cone(K, U)
    assert result.converged
    assert result.weights.shape == U.shape
    zero = np.diagonal(K) <= 0
    worst = 0.0
    exception = 1e-6 if result.dependent else 0.0  # rows within ~3e-7 of dependence
    for u, v in zip(U, result.weights):
        residual, nu = _dual_cone_residual(K, u, v)
        assert residual <= TOL + nu + exception
        np.testing.assert_array_equal(v[zero], u[zero])  # zero rows keep their weight
        worst = max(worst, residual)
    assert result.kkt_residual == pytest.approx(worst, abs=1e-15)


@given(data=st.data())
def test_dual_cone_projection_is_the_euclidean_projection(data: st.DataObject) -> None:
    # Independent check against SciPy's bounded quasi-Newton on min vᵀKv, v ≥ u, and the
    # projection's defining properties in gradient space.
    # In float64: the reference solver needs a PSD matrix.
    G, K = data.draw(hard_gramians(max_k=10, dtypes=(np.float64,)))
    k = K.shape[0]
    u = np.random.default_rng(data.draw(st.integers(0, 100))).uniform(0, 1, k)
    result = project_to_dual_cone(K, u)
    v = result.weights
    n = np.sqrt(np.clip(np.diagonal(K), 0, None))
    scale = float(n.max())
    if scale <= 0:
        np.testing.assert_array_equal(v, u)
        return
    Kn = K / scale**2
    reference = minimize(
        lambda x: float(x @ Kn @ x),
        u.copy(),
        jac=lambda x: 2 * Kn @ x,
        method="L-BFGS-B",
        bounds=[(ui, None) for ui in u],
        options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 2000},
    ).x
    size = 1.0 + float(np.abs(v).sum())
    assert float(v @ Kn @ v) <= float(reference @ Kn @ reference) + 1e-10 * size**2
    y, d = G.T @ u, G.T @ v
    tol = (1e-9 + (1e-6 if result.dependent else 0.0)) * float(np.abs(G).max()) ** 2
    tol *= G.shape[1] * size
    assert (G @ d >= -tol).all()  # in the dual cone
    assert abs(float((y - d) @ d)) <= tol * (1 + float(np.abs(y).max()))  # (y − d) ⊥ d


@given(G=matrices(max_k=6), c=st.floats(1e-8, 1e8), a=st.floats(1e-6, 1e6))
def test_regularized_projection_is_positively_homogeneous(
    G: torch.Tensor, c: float, a: float
) -> None:
    # With δ = 1e-8 the projection is insensitive to the rounding of K (c² K is not exactly
    # c² times K), even on nearly opposite rows, where the exact one is not (next test).
    K = (G @ G.T).numpy()
    u = np.linspace(0.5, 1.5, K.shape[0])
    base = G.T.numpy() @ project_to_dual_cone(K, u, regularization=1e-8).weights
    scaled = G.T.numpy() @ project_to_dual_cone(c * c * K, a * u, regularization=1e-8).weights
    atol = 1e-7 * a * float(G.abs().max()) * K.shape[0] * (1 + float(np.abs(base).max()))
    atol += 1e-300  # subnormal inputs round on their own
    np.testing.assert_allclose(scaled, a * base, rtol=1e-7, atol=atol)


def test_exact_projection_is_chaotic_on_nearly_opposite_rows_and_regularization_fixes_it() -> None:
    # Rows (1e-6, -1) and (0, 1) are within 1e-6 of opposite; with (−1, 0) the exact dual
    # cone is {x : x0 = x1 = 0}, thin in the sense that 1 − |cos| = 5e-13 is all K says of it.
    G = np.array([[1e-6, -1.0], [0.0, 1.0], [-1.0, 0.0]])
    K = G @ G.T
    u = np.ones(3)
    scaled = [(c * G) @ (c * G).T for c in (1.0, 1.75, 3.3, 10.0)]  # rounded differently
    exact = [G.T @ project_to_dual_cone(Kc, u).weights for Kc in scaled]
    assert max(float(np.abs(e - exact[0]).max()) for e in exact) > 1e-5
    reg = [G.T @ project_to_dual_cone(Kc, u, regularization=1e-8).weights for Kc in scaled]
    assert max(float(np.abs(e - reg[0]).max()) for e in reg) < 1e-10
    # Both meet their KKT bounds; the regularised one conflicts with the rows at cos ~5e-7.
    r = project_to_dual_cone(K, u, regularization=1e-8)
    assert r.kkt_residual <= TOL + 1e-8
    d = G.T @ r.weights
    cosines = G @ d / np.linalg.norm(G, axis=1) / np.linalg.norm(d)
    assert cosines.min() > -1e-6


@given(data=st.data())
def test_regularized_projection_meets_its_kkt_bound(data: st.DataObject) -> None:
    _, K = data.draw(hard_gramians(max_k=16))
    k = K.shape[0]
    U = np.vstack([np.eye(k), np.ones(k)])
    result = project_to_dual_cone(K, U, regularization=1e-8)
    assert result.dependent == 0  # C + δI is positive definite: nothing is left out
    for u, v in zip(U, result.weights):
        residual, nu = _dual_cone_residual(K, u, v)
        assert residual <= TOL + nu + 1e-8


def test_dual_cone_keeps_a_point_already_inside() -> None:
    # F2: (Gᵀ1)·g1 = 0 on the boundary, so v(1) = 1 exactly.
    K = np.array([[1.0, -1.0], [-1.0, 2.0]])
    np.testing.assert_array_equal(project_to_dual_cone(K, np.ones(2)).weights, [1.0, 1.0])
    np.testing.assert_allclose(project_to_dual_cone(K, np.array([1.0, 0.0])).weights, [1.0, 0.5])


def test_float32_inputs_are_solved_in_float64() -> None:
    G = torch.randn(32, 20, generator=torch.Generator().manual_seed(3))
    K32 = G @ G.T
    r = min_norm_point(K32)
    assert r.weights.dtype == np.float64
    assert r.kkt_residual <= TOL + 2 * _nu(K32.double().numpy() / float(K32.diagonal().max()))
    d = project_to_dual_cone(K32, np.eye(32))
    assert d.weights.dtype == np.float64 and d.converged


# -- spectral helpers ----------------------------------------------------------------------


def test_pinv_apply_matches_numpy_and_drops_rounding_noise() -> None:
    rng = np.random.default_rng(0)
    G = rng.standard_normal((4, 6))
    K = G @ G.T
    b = rng.standard_normal(4)
    np.testing.assert_allclose(pinv_apply(K, b), np.linalg.pinv(K) @ b, rtol=1e-10)
    # An eigenvalue below k·RANK_RTOL of the largest counts as zero.
    A = np.diag([1.0, 0.5 * 3 * RANK_RTOL, 0.0])
    lam, _ = kept_eigenpairs(A)
    np.testing.assert_array_equal(lam, [1.0])
    np.testing.assert_allclose(pinv_apply(A, np.ones(3)), [1.0, 0.0, 0.0])
    assert kept_eigenpairs(np.zeros((2, 2)))[0].size == 0
