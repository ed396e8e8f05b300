"""Convex quadratic programs over the non-negative orthant, in Gram form.

``min_x ½ xᵀHx − bᵀx`` subject to ``x ≥ 0``, with ``H`` symmetric positive semi-definite.
It is the non-negative least-squares problem ``min_{x ≥ 0} ‖Ax − c‖`` written with
``H = AᵀA`` and ``b = Aᵀc``, so the Lawson–Hanson active-set method applies to it unchanged
(Lawson & Hanson, *Solving Least Squares Problems*, 1974, ch. 23; the Gram-form variant of
Bro & De Jong, J. Chemometrics 1997). The method is exact up to rounding: it stops at a
point that meets the KKT conditions, in a finite number of steps.

The min-norm point of a convex hull (`gradsurgery.solvers.min_norm`) and the projection
onto a dual cone (`gradsurgery.solvers.dual_cone`) both reduce to this problem.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg.lapack import dpotrf, dpotrs

__all__ = ["NonnegativeQPResult", "psd_part", "psd_part_eigh", "solve_nonnegative_qp"]

_EPS = float(np.finfo(np.float64).eps)

#: A Cholesky pivot below this fraction of the largest diagonal entry of the passive block
#: marks the new column as linearly dependent on the passive ones (it is then left out).
_PIVOT_RTOL = 1e-13


@dataclass
class NonnegativeQPResult:
    """The solution of `solve_nonnegative_qp`.

    Attributes:
        x: The ``(k,)`` minimiser (exact zeros off the passive set).
        iterations: Inner (least-squares) solves performed.
        converged: Whether the method stopped before its iteration cap (no index outside
            the passive set but the ones left out as dependent had a positive
            negative-gradient).
        dependent: How many indices were left out as numerically dependent on the passive
            ones while their negative-gradient was still positive: the KKT residual is
            then of the size of that near-dependence rather than of rounding.
    """

    x: np.ndarray
    iterations: int
    converged: bool
    dependent: int = 0


def psd_part(A: np.ndarray) -> tuple[np.ndarray, float]:
    """The nearest positive semi-definite matrix to a symmetric ``A``, and ``ν = max(0, −λ_min)``.

    A Gramian computed in float32 is positive semi-definite only up to its rounding (its
    smallest eigenvalues can be about ``−1e-7`` of the largest). The active-set method
    needs a convex problem, so when some eigenvalue is below ``−16 k ε λ_max`` (ε float64's
    epsilon) the negative eigenvalues are clipped to 0; otherwise ``A`` is returned unchanged
    (the same object). The solution then meets its KKT
    conditions for the input up to a term of order ``ν`` (see the solvers' tolerances).
    """
    out, nu, _, _ = psd_part_eigh(A)
    return out, nu


def psd_part_eigh(A: np.ndarray) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """`psd_part`, plus the eigenpairs it came from: ``(out, ν, λ₊, V)`` with ``λ₊`` the
    eigenvalues clipped at 0, so that ``V diag(λ₊) Vᵀ`` is ``A`` with its negative
    eigenvalues set to 0."""
    k = A.shape[0]
    if k == 0:
        return A, 0.0, np.zeros(0), np.zeros((0, 0))
    lam, V = np.linalg.eigh(A)
    clipped = np.clip(lam, 0.0, None)
    nu = max(0.0, -float(lam[0]))
    if nu <= 16.0 * k * _EPS * max(float(lam[-1]), 0.0):
        return A, nu, clipped, V
    out = (V * clipped) @ V.T
    return (out + out.T) / 2, nu, clipped, V


def _solve_passive(H: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """``H⁻¹ b`` for a positive-definite block, or None when it is numerically singular."""
    # Raw LAPACK (Cholesky factor and solve): the blocks are tiny, so call overhead is
    # most of the cost.
    L, info = dpotrf(H, lower=1, clean=1, overwrite_a=0)
    if info != 0:
        return None
    pivots = np.diagonal(L) ** 2
    if pivots.min() <= _PIVOT_RTOL * max(float(np.diagonal(H).max()), 0.0):
        return None
    z, _ = dpotrs(L, b, lower=1)
    # One step of iterative refinement: the KKT residual then sits at rounding level even
    # for badly conditioned passive blocks.
    dz, _ = dpotrs(L, b - H @ z, lower=1)
    out: np.ndarray = z + dz
    return out


def _warm_start(H: np.ndarray, b: np.ndarray, passive: np.ndarray) -> np.ndarray:
    """A feasible start from a guessed passive set: solve on it and drop the indices whose
    solution is not positive, until all are (the Lawson–Hanson invariant then holds)."""
    passive = passive.copy()
    while passive.any():
        idx = np.flatnonzero(passive)
        sol = _solve_passive(H[np.ix_(idx, idx)], b[idx])
        if sol is None:
            break
        if (sol > 0).all():
            x = np.zeros(b.shape[0])
            x[idx] = sol
            return x
        passive[idx[sol <= 0]] = False
    return np.zeros(b.shape[0])


def solve_nonnegative_qp(
    H: np.ndarray,
    b: np.ndarray,
    *,
    start: np.ndarray | None = None,
    max_iter: int | None = None,
) -> NonnegativeQPResult:
    """Minimise ``½ xᵀHx − bᵀx`` over ``x ≥ 0`` (Lawson–Hanson active set, Gram form).

    At the solution ``x ≥ 0``, the negative gradient ``r = b − Hx`` is ``≤ 0`` everywhere
    and ``0`` where ``x > 0``. An index enters the passive (free) set when its ``r`` exceeds
    a rounding-level threshold. When the entering column is numerically dependent on the
    passive ones (the passive block's Cholesky pivot falls below ``1e-13`` of its diagonal,
    or the entering coordinate comes out non-positive), the index is left out: in exact
    arithmetic a dependent column has ``r = 0``, so what remains of its ``r`` is of the size
    of the near-dependence (rows within an angle of about ``3e-7`` of the others' span,
    which the Gramian cannot resolve better). Callers scale ``H`` and ``b`` to order one and keep
    ``b`` in the range of ``H`` (otherwise the problem can be unbounded below).

    Args:
        H: ``(k, k)`` symmetric positive semi-definite float64 matrix.
        b: ``(k,)`` float64 vector.
        start: A guess of the passive set (a ``(k,)`` boolean mask), e.g. the solution of
            a neighbouring problem; it only changes how fast the method gets there.
        max_iter: Cap on inner solves (default ``10 k + 20``).

    Returns:
        The solution, with the number of solves and whether the method finished.
    """
    k = b.shape[0]
    max_iter = 10 * k + 20 if max_iter is None else max_iter
    x = np.zeros(k) if start is None else _warm_start(H, b, start)
    passive = x > 0
    blocked = np.zeros(k, dtype=bool)
    size = max(float(np.abs(H).max()) if k else 0.0, float(np.abs(b).max()) if k else 0.0)
    absH = np.abs(H)
    iterations = 0
    converged = False
    dependent = 0
    while iterations < max_iter:
        r = b - H @ x
        # Per index, a bound on the rounding of r_i = b_i − Σ_j H_ij x_j. A bound through
        # ‖x‖₁ instead would let one huge coordinate on a near-null column (which a warm
        # start can give) hide a real improvement in every other index.
        threshold = 16.0 * k * _EPS * (size + absH @ np.abs(x))
        candidates = ~passive & ~blocked & (r > threshold)
        if not candidates.any():
            converged = True
            dependent = int((blocked & (r > threshold)).sum())
            break
        t = int(np.argmax(np.where(candidates, r, -np.inf)))
        passive[t] = True
        first = True
        while iterations < max_iter:
            iterations += 1
            idx = np.flatnonzero(passive)
            sol = _solve_passive(H[np.ix_(idx, idx)], b[idx])
            z = np.zeros(k)
            if sol is not None:
                z[idx] = sol
            if sol is None or (first and z[t] <= 0):
                # The entering column is (numerically) dependent on the passive ones: in
                # exact arithmetic its r would be 0. Leave it out.
                passive[t] = False
                blocked[t] = True
                break
            first = False
            if (z[idx] > 0).all():
                x = z
                blocked[:] = False
                break
            # Move from x towards z until the first passive coordinate reaches zero.
            neg = idx[z[idx] <= 0]
            ratios = x[neg] / (x[neg] - z[neg])
            blocking = int(neg[np.argmin(ratios)])
            x = x + float(ratios.min()) * (z - x)
            leaving = passive & (x <= _EPS * float(np.abs(x).max()))
            leaving[blocking] = True
            passive &= ~leaving
            x[~passive] = 0.0
    return NonnegativeQPResult(x, iterations, converged, dependent)
