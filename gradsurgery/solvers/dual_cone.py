r"""Projection onto the dual cone of the gradient rows, on the Gramian.

The dual cone of the rows ``g_i`` of ``G`` is ``{x : g_i·x ≥ 0 for every i}``. By Quinton &
Rey ("Jacobian Descent for Multi-Objective Optimization", 2024, Prop. 1) the Euclidean
projection of ``Gᵀu`` onto it is ``Gᵀv`` with

$$v = \arg\min_{v \ge u} v^\top K v, \qquad K = GG^\top .$$

Writing ``v = u + z`` turns this into ``min_{z ≥ 0} ½ zᵀKz + (Ku)ᵀz``, a non-negative
least-squares problem in Gram form — no QP library needed, and no regularisation of ``K``
(TorchJD and LibMTL add ``1e-4·I`` to the trace-normalised ``K``, which moves their weights
in the fourth decimal). With a factor ``AᵀA = C`` (below) it is ``min_{z ≥ 0} ‖Az + Au‖²``,
which SciPy's compiled NNLS (Lawson–Hanson) solves in one call per ``u``; a solution whose KKT
residual is above half of the stated tolerance is solved again by the exact active-set
method of `gradsurgery.solvers.nonnegative` (in Python, whose per-iteration overhead made it
10 times slower at ``k = 16``). A ``u`` whose ``Gᵀu`` already lies in the cone needs no solve.

The dual cone depends on the rows' directions only, so the problem is solved on the cosine
matrix ``C = D⁻¹KD⁻¹`` (``D`` the row norms; zero rows, whose constraint ``0·x ≥ 0`` always
holds, are left out and keep ``v_i = u_i``) with ``u' = Du``, and mapped back by
``v = D⁻¹v'``. This makes the problem exactly invariant to the rows' scales, so rows whose
norms differ by many orders of magnitude are handled as well as equal ones, and ``u'`` is
divided by its largest magnitude, so ``v(cu) = c·v(u)`` for ``c > 0``.

**Stated tolerance.** With ``û = u'/max_i |u'_i|``, ``v̂ = v'/max_i |u'_i|``, ``z = v̂ − û``
and ``s = Cv̂`` (``s_i`` is ``cos(g_i, d)·‖d‖`` on that scale), the result meets
``max(max_i (−s_i)₊, max_{z_i > 0} |s_i|, max_i (−z_i)₊) ≤ (KKT_TOL + ν) · max(1, ‖v̂‖₁)``,
``KKT_TOL = 1e-10`` (`dual_cone_kkt_residual` divides by ``max(1, ‖v̂‖₁)``), where
``ν = max(0, −λ_min(C))`` measures how far the input is from positive semi-definite (about
``1e-16`` for a float64 Gramian, up to about ``1e-7`` for a float32 one). With a
``regularization`` ``δ > 0`` the bound becomes ``KKT_TOL + ν + δ``. Checked by property
tests for ``k ≤ 32`` with float64 and float32 Gramians, rank-deficient and conflicting rows
included. One exception, reported in ``dependent`` and only without regularisation: a row
within an angle of about ``3e-7`` of the span of the active rows (closer than a float64
Gramian resolves) is left out as dependent, and its residual is then of the order of that
angle (at most about ``1e-6``).

**Conditioning.** When rows are nearly opposite (within an angle ``ε``) the dual cone is
thin and the exact projection depends on ``K`` through ``1 − |cos| ≈ ε²/2``, which a float64
Gramian holds only to about ``1e-16``: the exact solution then moves by up to
``1e-16/ε²`` under rounding (``1e-4`` at ``ε = 1e-6``) while its KKT residual stays tiny.
``regularization = δ`` caps that sensitivity at ``1/δ``; the methods use ``δ = 1e-8``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import nnls

from .linalg import as_gramian_array, cosine_matrix
from .nonnegative import _EPS, psd_part_eigh, solve_nonnegative_qp

__all__ = ["KKT_TOL", "DualConeResult", "dual_cone_kkt_residual", "project_to_dual_cone"]

#: The KKT residual the projection meets on a PSD Gramian (see the module docstring).
KKT_TOL = 1e-10


@dataclass
class DualConeResult:
    """Projection weights and how they were found.

    Attributes:
        weights: ``v(u)``, shaped like ``u`` (``(k,)`` or ``(m, k)``), float64.
        kkt_residual: The largest `dual_cone_kkt_residual` over the rows of ``u``.
        iterations: Solves over all rows: one per compiled NNLS solve, plus the inner
            solves of the active-set fallback.
        converged: Whether every row's solve finished.
        dependent: Rows left out as numerically dependent on the active ones, over all
            solves (see the module docstring); 0 when ``regularization > 0``.
    """

    weights: np.ndarray
    kkt_residual: float
    iterations: int
    converged: bool
    dependent: int = 0


def dual_cone_kkt_residual(gramian: Any, u: Any, v: Any) -> float:
    """How far ``v`` is from ``argmin_{v ≥ u} vᵀKv`` (0 at the optimum; dimensionless).

    See the module docstring for the definition; ``u`` and ``v`` are ``(k,)`` vectors.
    """
    K = as_gramian_array(gramian)
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    C, n, nonzero = cosine_matrix(K)
    if not nonzero.any():
        return 0.0
    un = u[nonzero] * n[nonzero]
    vn = v[nonzero] * n[nonzero]
    size = float(np.abs(un).max())
    if size <= 0:
        size = max(float(np.abs(vn).max()), 1.0)
    un, vn = un / size, vn / size
    z = vn - un
    s = C @ vn
    primal = float(np.max(-z, initial=0.0))
    dual = float(np.max(-s, initial=0.0))
    complementary = float(np.max(np.abs(s[z > 0]), initial=0.0))
    return max(0.0, primal, dual, complementary) / max(1.0, float(np.abs(vn).sum()))


def _kkt_residuals(
    C: np.ndarray, m: np.ndarray, nonzero: np.ndarray, rows: np.ndarray, out: np.ndarray
) -> float:
    """The largest `dual_cone_kkt_residual` over the rows of ``rows`` / ``out``, all at once.

    ``C`` is the input's cosine matrix of the non-zero rows and ``m`` their norms (from
    `cosine_matrix`), so the residual is the input's, whatever the solve ran on.
    """
    if not nonzero.any() or rows.shape[0] == 0:
        return 0.0
    un = rows[:, nonzero] * m
    vn = out[:, nonzero] * m
    size = np.abs(un).max(axis=1)
    fallback = np.maximum(np.abs(vn).max(axis=1), 1.0)
    size = np.where(size > 0, size, fallback)
    un = un / size[:, None]
    vn = vn / size[:, None]
    z = vn - un
    s = vn @ C  # C is symmetric: row r of s is C @ vn[r]
    primal = np.maximum(-z, 0.0).max(axis=1)
    dual = np.maximum(-s, 0.0).max(axis=1)
    complementary = np.where(z > 0, np.abs(s), 0.0).max(axis=1)
    worst = np.maximum(np.maximum(primal, dual), complementary)
    return float((worst / np.maximum(1.0, np.abs(vn).sum(axis=1))).max())


def _fast_solves(C: np.ndarray, A: np.ndarray, units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``z_r = argmin_{z ≥ 0} ½ zᵀCz + (Cu_r)ᵀz`` for each row ``u_r`` of ``units``, by
    SciPy's compiled NNLS on ``A`` (``AᵀA = C`` up to rounding), and a mask of the rows
    whose KKT residual meets half of `KKT_TOL` (the caller runs the exact active-set solver
    on the others).

    With ``AᵀA = C`` the problem is ``min_{z ≥ 0} ‖Az + Au‖²``: one compiled call per row
    instead of an active-set loop in Python, whose per-iteration overhead dominates for
    ``k ≤ 32``; the KKT conditions of all rows are then checked at once.
    """
    Z = np.zeros_like(units)
    solved = np.ones(units.shape[0], dtype=bool)
    targets = -(units @ A.T)
    for r in range(units.shape[0]):
        try:
            Z[r], _ = nnls(A, targets[r])
        except (RuntimeError, ValueError):  # no convergence within SciPy's cap
            solved[r] = False
    V = units + Z
    S = V @ C  # C is symmetric: row r is C v_r
    worst = np.maximum(
        np.maximum(np.maximum(-S, 0.0).max(axis=1), np.maximum(-Z, 0.0).max(axis=1)),
        np.where(Z > 0, np.abs(S), 0.0).max(axis=1),
    )
    solved &= worst <= 0.5 * KKT_TOL * np.maximum(1.0, np.abs(V).sum(axis=1))
    return Z, solved


def _increments(
    C: np.ndarray, A: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, int, bool, int]:
    """``z = v − u`` for each row ``u`` of ``rows`` on the unit rows, with the number of
    solves, whether all finished, and how many indices were left out as dependent.

    Each ``u`` is scaled to order one for the solve. A row whose ``Gᵀu`` is already in the
    cone (no row conflicts with it, to the active-set solver's own threshold at ``z = 0``)
    gets ``z = 0`` without a solve. The others go to `_fast_solves`; a row it does not
    solve to the tolerance goes to the exact active-set solver, each such solve starting
    from the previous one's active set.
    """
    k = C.shape[0]
    Z = np.zeros_like(rows)
    size = np.abs(rows).max(axis=1) if k else np.zeros(rows.shape[0])
    live = size > 0
    units = rows[live] / size[live, None]
    B = -(units @ C)  # row r: −C u_r
    threshold = 16.0 * k * _EPS * np.maximum(float(np.abs(C).max()), np.abs(B).max(axis=1))
    conflict = (threshold[:, None] < B).any(axis=1)
    index = np.flatnonzero(live)[conflict]
    if index.size == 0:
        return Z, 0, True, 0
    units, B = units[conflict], B[conflict]
    fast, solved = _fast_solves(C, A, units)
    iterations, converged, dependent = int(solved.sum()), True, 0
    start = None
    for j in range(index.size):
        if solved[j]:
            z = fast[j]
        else:
            result = solve_nonnegative_qp(C, B[j], start=start)
            z = result.x
            iterations += result.iterations
            converged &= result.converged
            dependent += result.dependent
            start = z > 0
        Z[index[j]] = z * size[index[j]]
    return Z, iterations, converged, dependent


def project_to_dual_cone(gramian: Any, u: Any, *, regularization: float = 0.0) -> DualConeResult:
    """``v(u) = argmin_{v ≥ u} vᵀKv`` for one ``u`` or for each row of ``u``.

    ``Gᵀv(u)`` is the projection of ``Gᵀu`` onto the dual cone of the rows. When ``Gᵀu``
    already lies in the cone, ``v = u`` exactly; a zero row keeps ``v_i = u_i``. When the
    rows are linearly dependent ``v`` need not be unique (``Gᵀv`` is).

    Args:
        gramian: ``(k, k)`` Gramian, a tensor or array of any float dtype.
        u: ``(k,)`` or ``(m, k)`` weights of the vectors to project.
        regularization: ``δ`` added to the diagonal of the cosine matrix (default 0:
            exact). The solution is then exact for ``C + δI`` (each unit row gets a private
            component of length ``√δ``), which bounds the solution's sensitivity to
            rounding of ``K`` by ``1/δ``; the KKT residual for the input grows by at most
            ``δ`` (``s_i ≥ −δ v̂_i``).

    Returns:
        The projection weights (shaped like ``u``), the largest KKT residual (for the
        input, without the regularisation), the number of solves and convergence.
    """
    K = as_gramian_array(gramian)
    U = np.asarray(u, dtype=np.float64)
    single = U.ndim == 1
    rows = U[None] if single else U
    if rows.ndim != 2 or rows.shape[1] != K.shape[0]:
        raise ValueError(f"expected u of shape ({K.shape[0]},) or (m, {K.shape[0]}), got {U.shape}")
    C_input, n, nonzero = cosine_matrix(K)
    C, _, lam, V = psd_part_eigh(C_input)
    if regularization > 0:
        C = C + regularization * np.eye(C.shape[0])
    # A factor of the solve's C from the same eigenpairs (C + δI: every eigenvalue + δ).
    A = (V * np.sqrt(lam + max(regularization, 0.0))).T
    m = n[nonzero]
    out = rows.copy()
    iterations = dependent = 0
    converged = True
    if nonzero.any():
        # The dual cone depends on the rows' directions only: solve on the unit rows
        # (weights D·u, D = diag of the norms) and map back; v = u + z, so where the
        # solution leaves u alone, v equals u exactly.
        Z, iterations, converged, dependent = _increments(C, A, rows[:, nonzero] * m)
        out[:, nonzero] = rows[:, nonzero] + Z / m
    residual = _kkt_residuals(C_input, m, nonzero, rows, out)
    return DualConeResult(out[0] if single else out, residual, iterations, converged, dependent)
