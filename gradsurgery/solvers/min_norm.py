r"""The min-norm point of the convex hull of the gradient rows, from their Gramian.

``w* = argmin_{w ∈ Δ_k} wᵀKw`` (``Δ_k`` the probability simplex, ``K = GGᵀ``); ``Gᵀw*`` is
the point of the convex hull of the rows closest to the origin (MGDA's direction).

Two solvers:

* `min_norm_point` (exact): the problem is the dual of a least-distance program, and
  ``w* = u / Σu`` where ``u`` solves the non-negative least-squares problem
  ``min_{u ≥ 0} ½ uᵀ(K + 11ᵀ)u − 1ᵀu`` (Lawson & Hanson 1974, ch. 23). Its KKT conditions,
  ``(K + 11ᵀ)u − 1 ≥ 0`` with equality where ``u > 0``, are exactly MGDA's:
  ``(Kw)_i ≥ wᵀKw`` for every ``i``, with equality where ``w_i > 0``. Solved by the
  active-set method of `gradsurgery.solvers.nonnegative` on ``K`` divided by its largest
  diagonal entry, in float64 whatever the input dtype.
* `frank_wolfe`: Sener & Koltun's Algorithm 2 (NeurIPS 2018), as in TorchJD: approximate,
  stops when the step falls below ``epsilon``.

**Stated tolerance.** With ``K̂ = K / max_i K_ii``, ``μ = wᵀK̂w`` and ``s = K̂w − μ1``, the
exact solver returns ``w ≥ 0``, ``Σw = 1`` (to rounding) with
``max(max_i (−s_i)₊, max_{w_i > 0} |s_i|) ≤ KKT_TOL + 2ν``, ``KKT_TOL = 1e-10``
(`min_norm_kkt_residual`), where ``ν = max(0, −λ_min(K̂))`` measures how far the input is
from positive semi-definite: about ``1e-16`` for a Gramian computed in float64, up to about
``1e-7`` for one computed in float32 (the solver works on the PSD part of ``K̂``,
`gradsurgery.solvers.nonnegative.psd_part`). Checked by property tests for ``k ≤ 32`` with
float64 and float32 Gramians, rank-deficient and conflicting rows included.

One exception, reported in ``dependent``: a row within an angle of about ``3e-7`` of the
affine span of the active rows (closer than a float64 Gramian resolves) is left out as
dependent, and its residual is then of the order of that angle (at most about ``1e-6``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .linalg import as_gramian_array
from .nonnegative import psd_part, solve_nonnegative_qp

__all__ = [
    "KKT_TOL",
    "MinNormResult",
    "frank_wolfe",
    "min_norm_kkt_residual",
    "min_norm_point",
]

#: The KKT residual the exact solver meets on a PSD Gramian (see the module docstring).
KKT_TOL = 1e-10


@dataclass
class MinNormResult:
    """A point of the simplex and how it was found.

    Attributes:
        weights: ``(k,)`` float64 weights, ``≥ 0`` and summing to 1.
        kkt_residual: `min_norm_kkt_residual` at ``weights``.
        iterations: Solver iterations.
        converged: Whether the solver met its stopping rule within its iteration cap.
        dependent: Rows the exact solver left out as numerically dependent on the active
            ones (see the module docstring); 0 for Frank-Wolfe.
    """

    weights: np.ndarray
    kkt_residual: float
    iterations: int
    converged: bool
    dependent: int = 0


def _scale(K: np.ndarray) -> float:
    """The largest diagonal entry (the largest squared row norm), or 0."""
    return max(float(np.diagonal(K).max()), 0.0) if K.shape[0] else 0.0


def min_norm_kkt_residual(gramian: Any, weights: Any) -> float:
    """How far ``weights`` is from meeting MGDA's optimality conditions (0 at the optimum).

    With ``K̂ = K / max_i K_ii``, ``μ = wᵀK̂w`` and ``s = K̂w − μ1``:
    ``max(max_i (−s_i)₊, max_{w_i > 0} |s_i|, max_i (−w_i)₊, |Σw − 1|)``. Dimensionless.
    """
    K = as_gramian_array(gramian)
    w = np.asarray(weights, dtype=np.float64)
    primal = max(float(np.max(-w, initial=0.0)), abs(float(w.sum()) - 1.0))
    scale = _scale(K)
    if scale <= 0:
        return primal
    Kn = K / scale
    Kw = Kn @ w
    s = Kw - float(w @ Kw)
    dual = float(np.max(-s, initial=0.0))
    complementary = float(np.max(np.abs(s[w > 0]), initial=0.0))
    return max(0.0, primal, dual, complementary)


def min_norm_point(gramian: Any) -> MinNormResult:
    """The exact minimiser of ``wᵀKw`` over the simplex (see the module docstring).

    When rows are affinely dependent the minimiser ``w`` is not unique (the point ``Gᵀw``
    is); the active-set method then returns one with few non-zero weights. An all-zero
    Gramian returns the uniform weights.

    Args:
        gramian: ``(k, k)`` Gramian, a tensor or array of any float dtype.

    Returns:
        The weights, their KKT residual, the number of solves and convergence.
    """
    K = as_gramian_array(gramian)
    k = K.shape[0]
    scale = _scale(K)
    if k == 1 or scale <= 0:
        w = np.full(k, 1.0 / k)
        return MinNormResult(w, min_norm_kkt_residual(K, w), 0, True)
    Kn, _ = psd_part(K / scale)
    result = solve_nonnegative_qp(Kn + 1.0, np.ones(k))
    u = result.x
    w = u / u.sum()
    return MinNormResult(
        w, min_norm_kkt_residual(K, w), result.iterations, result.converged, result.dependent
    )


def frank_wolfe(gramian: Any, *, epsilon: float = 1e-3, max_iters: int = 100) -> MinNormResult:
    """Frank-Wolfe on ``wᵀKw`` over the simplex (Sener & Koltun 2018, Algorithm 2).

    From ``w = 1/k``: ``t = argmin_i (Kw)_i`` (first index on ties), ``a = (Kw)_t``,
    ``b = wᵀKw``, ``c = K_tt``; step ``γ = 1`` if ``c ≤ a``, ``0`` if ``b ≤ a``, else
    ``(b − a)/(b + c − 2a)``; ``w ← (1 − γ)w + γe_t``; stop once ``γ < epsilon``.

    Approximate: it meets no KKT tolerance, but its residual is reported.

    Args:
        gramian: ``(k, k)`` Gramian.
        epsilon: Stop when the step is below this.
        max_iters: Iteration cap.
    """
    K = as_gramian_array(gramian)
    k = K.shape[0]
    w = np.full(k, 1.0 / k)
    iterations = 0
    converged = False
    for _ in range(max_iters):
        iterations += 1
        Kw = K @ w
        t = int(np.argmin(Kw))
        a = float(Kw[t])
        b = float(w @ Kw)
        c = float(K[t, t])
        if c <= a:
            gamma = 1.0
        elif b <= a:
            gamma = 0.0
        else:
            gamma = (b - a) / (b + c - 2.0 * a)
        w = (1.0 - gamma) * w
        w[t] += gamma
        if gamma < epsilon:
            converged = True
            break
    return MinNormResult(w, min_norm_kkt_residual(K, w), iterations, converged)
