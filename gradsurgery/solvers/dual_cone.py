r"""Projection onto the dual cone of the gradient rows, on the Gramian.

The dual cone of the rows ``g_i`` of ``G`` is ``{x : g_i·x ≥ 0 for every i}``. By Quinton &
Rey ("Jacobian Descent for Multi-Objective Optimization", 2024, Prop. 1) the Euclidean
projection of ``Gᵀu`` onto it is ``Gᵀv`` with

$$v = \arg\min_{v \ge u} v^\top K v, \qquad K = GG^\top .$$

Writing ``v = u + z`` turns this into ``min_{z ≥ 0} ½ zᵀKz + (Ku)ᵀz``, a non-negative
least-squares problem in Gram form, solved exactly by the active-set method of
`gradsurgery.solvers.nonnegative` — no QP library needed, and no regularisation of ``K``
(TorchJD and LibMTL add ``1e-4·I`` to the trace-normalised ``K``, which moves their weights
in the fourth decimal).

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

from .linalg import as_gramian_array, cosine_matrix
from .nonnegative import NonnegativeQPResult, psd_part, solve_nonnegative_qp

__all__ = ["KKT_TOL", "DualConeResult", "dual_cone_kkt_residual", "project_to_dual_cone"]

#: The KKT residual the projection meets on a PSD Gramian (see the module docstring).
KKT_TOL = 1e-10


@dataclass
class DualConeResult:
    """Projection weights and how they were found.

    Attributes:
        weights: ``v(u)``, shaped like ``u`` (``(k,)`` or ``(m, k)``), float64.
        kkt_residual: The largest `dual_cone_kkt_residual` over the rows of ``u``.
        iterations: Active-set solves, over all rows.
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


def _increment(
    C: np.ndarray, u: np.ndarray, start: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None, NonnegativeQPResult | None]:
    """``z = v − u`` for one ``u`` on the unit rows (``u`` scaled to order one for the
    solve), the passive set to warm-start the next solve, and the solver's result."""
    size = float(np.abs(u).max())
    if size <= 0:
        return np.zeros_like(u), start, None
    result = solve_nonnegative_qp(C, -(C @ (u / size)), start=start)
    return result.x * size, result.x > 0, result


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
    C, n, nonzero = cosine_matrix(K)
    C, _ = psd_part(C)
    if regularization > 0:
        C = C + regularization * np.eye(C.shape[0])
    m = n[nonzero]
    out = rows.copy()
    iterations = dependent = 0
    converged = True
    residual = 0.0
    start = None
    for i, row in enumerate(rows):
        if nonzero.any():
            # The dual cone depends on the rows' directions only: solve on the unit rows
            # (weights D·u, D = diag of the norms) and map back. Each solve starts from the
            # previous one's active set.
            z, start, result = _increment(C, row[nonzero] * m, start)
            # v = u + z: where the solution leaves u alone, v equals u exactly.
            out[i, nonzero] = row[nonzero] + z / m
            if result is not None:
                iterations += result.iterations
                converged &= result.converged
                dependent += result.dependent
        residual = max(residual, dual_cone_kkt_residual(K, row, out[i]))
    return DualConeResult(out[0] if single else out, residual, iterations, converged, dependent)
