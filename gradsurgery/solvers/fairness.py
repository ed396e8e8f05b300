"""α-fair weights on a Gramian: the system ``K w = w^{−1/α}`` (Nash-MTL is ``α = 1``).

For ``α > 0`` the system is the stationarity condition of the strictly convex function

    f(w) = ½ wᵀKw + h(w),   h'(w_i) = −w_i^{−1/α}
    (h = −Σ log w_i for α = 1, h = −Σ w_i^{1−1/α} / (1 − 1/α) otherwise)

on ``w > 0``, so a damped Newton method solves it. It has a solution exactly when no
non-negative, non-zero combination of the rows vanishes (the rows are not Pareto-stationary):
otherwise ``f`` is unbounded below along that combination. That is decided first, on MGDA's
min-norm point.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .simplex import min_norm_on_simplex

__all__ = ["FEASIBILITY_EPS", "alpha_fair_weights"]

#: The rows count as Pareto-stationary (no solution) when the min-norm point of their convex
#: hull has a squared norm below this fraction of the mean squared row norm.
FEASIBILITY_EPS = 1e-10

_EPS = float(np.finfo(np.float64).eps)

#: Weights are capped at ``exp(_LOG_LARGEST)`` (1.796e308, just below float64's largest).
_LOG_LARGEST = 709.78


def _power(w: np.ndarray, alpha: float) -> np.ndarray:
    """``w^{−1/α}``."""
    out: np.ndarray = np.exp(-np.log(w) / alpha)
    return out


def _objective(K: np.ndarray, w: np.ndarray, alpha: float) -> float:
    quadratic = 0.5 * float(w @ K @ w)
    if alpha == 1.0:
        return quadratic - float(np.sum(np.log(w)))
    q = 1.0 - 1.0 / alpha
    return quadratic - float(np.sum(np.exp(q * np.log(w)))) / q


def alpha_fair_weights(
    gramian: np.ndarray,
    alpha: float,
    *,
    x0: np.ndarray | None = None,
    tol: float = 1e-10,
    max_iter: int = 200,
    log_scale: float = 0.0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Solve ``K w = w^{−1/α}``, ``w > 0``.

    The problem is solved on ``K / s`` with ``s`` the mean squared row norm (so that the
    tolerance and the feasibility test are scale-free) and mapped back with
    ``w = s^{−α/(1+α)} w_s``.

    Args:
        gramian: ``(k, k)`` Gramian ``K``.
        alpha: Fairness exponent (> 0).
        x0: Warm start for the scaled problem (positive; default all ones).
        tol: Stop when ``max_i |w_i^{1/α} (K w)_i − 1| ≤ tol`` (or below that quantity's
            own rounding error, reached only when the rows are close to Pareto-stationary).
        max_iter: Newton iteration cap.
        log_scale: The true Gramian is ``exp(log_scale) · gramian`` (see
            `gradsurgery.solvers.scaled_gramian`).

    Returns:
        ``(w, info)``; ``w`` is all zeros when the rows are Pareto-stationary. ``info``:
        ``feasible``, ``converged``, ``iterations``, ``residual`` (the stopping quantity),
        ``scaled`` (the solution of the scaled problem, for warm starts), ``update_norm``
        (``‖Gᵀw‖``, computed on the scaled problem) and ``out_of_range`` (some weight would
        exceed float64's range, reached only by subnormal rows at α = 1, and was capped at
        about 1.8e308).
    """
    K = np.asarray(gramian, dtype=np.float64)
    k = K.shape[0]
    scale = float(np.trace(K)) / k
    info: dict[str, Any] = {
        "feasible": False,
        "converged": False,
        "iterations": 0,
        "residual": float("nan"),
        "scaled": None,
        "update_norm": 0.0,
        "out_of_range": False,
    }
    if not scale > 0:
        return np.zeros(k), info
    Ks = K / scale
    _, min_norm = min_norm_on_simplex(Ks)
    if min_norm <= FEASIBILITY_EPS:
        return np.zeros(k), info
    info["feasible"] = True
    w = np.zeros(k) if x0 is None else np.asarray(x0, dtype=np.float64).copy()
    if w.shape != (k,) or not (np.isfinite(w).all() and (w > 0).all()):
        # The best multiple of the all-ones vector: t·(1ᵀK1) = k·t^{−1/α}.
        total = float(Ks.sum())
        w = np.full(k, (k / total) ** (alpha / (1.0 + alpha)) if total > 0 else 1.0)

    absolute = np.abs(Ks)

    def residual(w: np.ndarray) -> float:
        return float(np.max(np.abs(np.exp(np.log(w) / alpha) * (Ks @ w) - 1.0)))

    def rounding(w: np.ndarray) -> float:
        # The residual's own rounding error: below it, no w is measurably better.
        return 4 * _EPS * float(np.max(np.exp(np.log(w) / alpha) * (absolute @ w)))

    value, res = _objective(Ks, w, alpha), residual(w)
    iterations = 0
    while iterations < max_iter and res > max(tol, rounding(w)):
        iterations += 1
        grad = Ks @ w - _power(w, alpha)
        hess = Ks + np.diag(_power(w, alpha) / (alpha * w))
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            break
        decrease = float(grad @ step)
        t = 1.0
        # Stay inside w > 0, then backtrack on f (with a fall-back on the residual, which
        # still measures progress once f's decrease is below its rounding).
        shrinking = step > 0
        if shrinking.any():
            # Fraction to the boundary w > 0.
            with np.errstate(over="ignore"):
                t = min(1.0, 0.9 * float(np.min(w[shrinking] / step[shrinking])))
        while True:
            trial = w - t * step
            trial_value = _objective(Ks, trial, alpha)
            if trial_value <= value - 1e-4 * t * decrease:
                break
            trial_res = residual(trial)
            if trial_res < res and abs(trial_value - value) <= 1e-12 * (abs(value) + 1.0):
                break
            t *= 0.5
            if t < 1e-14:
                break
        if t < 1e-14:
            break
        w, value, res = trial, trial_value, residual(trial)
    # w = s^{−α/(1+α)} w_s with s the true mean diagonal, in logs (s may be far below
    # float64's range when log_scale says so); ‖Gᵀw‖² = s^{(1−α)/(1+α)} w_sᵀK_s w_s.
    log_s = math.log(scale) + log_scale
    norm_sq = max(float(w @ Ks @ w), 0.0)
    log_factor = -alpha / (1.0 + alpha) * log_s
    info.update(
        converged=bool(res <= max(tol, rounding(w))),
        iterations=iterations,
        residual=res,
        scaled=w.copy(),
        update_norm=math.sqrt(norm_sq)
        * math.exp(min(0.5 * (1.0 - alpha) / (1.0 + alpha) * log_s, _LOG_LARGEST)),
        # Rows so short (or α so large) that the weights exceed float64's range: they are
        # capped, so the update is shorter than the solution's.
        out_of_range=bool((np.log(w) + log_factor > _LOG_LARGEST).any()),
    )
    return np.exp(np.minimum(np.log(w) + log_factor, _LOG_LARGEST)), info
