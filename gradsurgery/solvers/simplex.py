"""Small convex problems over the probability simplex, solved on a ``k x k`` Gramian."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize, minimize_scalar

__all__ = ["minimize_on_simplex"]

Objective = Callable[[np.ndarray], float]
Gradient = Callable[[np.ndarray], np.ndarray]


def minimize_on_simplex(
    fun: Objective, jac: Gradient, k: int, *, tol: float = 1e-12, max_iter: int = 200
) -> tuple[np.ndarray, bool]:
    """Minimise a convex function over ``Δ_k = {w ≥ 0, Σ w = 1}``.

    ``k = 1`` is trivial, ``k = 2`` is a bounded scalar search over ``w = (x, 1 − x)``, and
    larger ``k`` uses SLSQP from the uniform start with the analytic gradient.

    Args:
        fun: The objective, a function of ``w`` (shape ``(k,)``).
        jac: Its gradient.
        k: Dimension.
        tol: Solver tolerance.
        max_iter: Iteration cap.

    Returns:
        ``(w, success)``: the minimiser (projected back onto the simplex) and whether the
        solver reported convergence. On failure ``w`` is the best point found, or uniform.
    """
    if k == 1:
        return np.ones(1), True
    if k == 2:
        res = minimize_scalar(
            lambda x: fun(np.array([x, 1.0 - x])),
            bounds=(0.0, 1.0),
            method="bounded",
            options={"xatol": 1e-12, "maxiter": max_iter},
        )
        x = float(np.clip(res.x, 0.0, 1.0))
        w = np.array([x, 1.0 - x])
        # The bounded search never evaluates the end points exactly; take them if better.
        for corner in (np.array([1.0, 0.0]), np.array([0.0, 1.0])):
            if fun(corner) <= fun(w):
                w = corner
        return w, bool(res.success)
    x0 = np.full(k, 1.0 / k)
    res = minimize(
        fun,
        x0,
        jac=jac,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * k,
        constraints=({"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(k)},),
        options={"ftol": tol, "maxiter": max_iter},
    )
    w = np.clip(res.x, 0.0, None)
    total = w.sum()
    if not np.isfinite(total) or total <= 0:
        return x0, False
    w = w / total
    if fun(w) > fun(x0):
        return x0, False
    return w, bool(res.success)
