"""Small convex problems over the probability simplex, solved on a ``k x k`` Gramian.

Every solver here returns a point of ``Δ_k = {w ≥ 0, Σ w = 1}`` and certifies it with the
KKT conditions of the simplex. For a differentiable convex ``f`` with gradient ``g = ∇f(w)``
they read: ``w ∈ Δ_k`` (exactly: the solvers return non-negative points whose sum is 1 up to
rounding), multipliers ``λ_i = g_i − min_j g_j ≥ 0`` (dual feasibility, exact by
construction) and complementary slackness ``Σ_i w_i λ_i = 0``. The violation of the last one,

    gap(w) = wᵀg − min_i g_i  (≥ 0, the Frank-Wolfe gap, an upper bound on f(w) − min f),

is the single number `simplex_gap` measures. The stated tolerances (``tol = 1e-10``):

* `minimize_quadratic_on_simplex` (``½ xᵀQx + cᵀx``): ``gap ≤ tol · (max |Q_ij| + max |c_i|)``,
  the size of the gradient's entries at the vertices;
* `minimize_on_simplex` (a general convex ``f``): ``gap ≤ tol · max(‖∇f(w)‖∞, ‖∇f(w₀)‖∞)``,
  ``w₀`` the start point (its gradient sets the scale when the gradient vanishes at the
  solution).

Both are met in float64 for ``k`` up to 32 whether the data came from float32 or float64
tensors (inputs are converted to float64 first); the property tests in
``tests/methods/test_solver_simplex.py`` check it. Where the minimum of a non-quadratic
``f`` sits at a point where ``f`` is not differentiable, the gap cannot certify it: the
solver then says so (``success = False``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = [
    "min_norm_on_simplex",
    "minimize_on_simplex",
    "minimize_quadratic_on_simplex",
    "project_onto_simplex",
    "simplex_gap",
]

Objective = Callable[[np.ndarray], float]
Gradient = Callable[[np.ndarray], np.ndarray]
Hessian = Callable[[np.ndarray], np.ndarray]

#: Default stopping tolerance, relative to the largest gradient entry (see the module doc).
DEFAULT_TOL = 1e-10


def simplex_gap(w: np.ndarray, grad: np.ndarray) -> float:
    """The KKT (Frank-Wolfe) gap ``wᵀg − min_i g_i`` of a simplex point ``w``.

    Zero exactly at a minimiser of a differentiable convex function with gradient ``g`` at
    ``w``; for convex ``f`` it bounds ``f(w) − min_Δ f`` from above.
    """
    return float(np.dot(w, grad) - np.min(grad))


def _converged(w: np.ndarray, grad: np.ndarray, tol: float, scale: float = 0.0) -> bool:
    return simplex_gap(w, grad) <= tol * max(float(np.max(np.abs(grad))), scale)


def project_onto_simplex(y: np.ndarray, radius: float = 1.0) -> np.ndarray:
    """Euclidean projection of ``y`` onto ``{w ≥ 0, Σ w = radius}`` (sort-and-threshold).

    Args:
        y: ``(k,)`` point.
        radius: Sum of the simplex (> 0).

    Returns:
        The ``(k,)`` projection, in float64.
    """
    y = np.asarray(y, dtype=np.float64)
    u = np.sort(y)[::-1]
    cumulative = np.cumsum(u) - radius
    index = np.arange(1, y.size + 1)
    rho = int(np.nonzero(u - cumulative / index > 0)[0][-1])
    theta = cumulative[rho] / (rho + 1)
    out: np.ndarray = np.maximum(y - theta, 0.0)
    return out


def _on_simplex(w: np.ndarray) -> np.ndarray:
    """Clip rounding negatives and renormalise a point that is on the simplex up to rounding."""
    w = np.maximum(w, 0.0)
    out: np.ndarray = w / w.sum()
    return out


def _face_basis(n: int) -> np.ndarray:
    """An orthonormal ``(n, n - 1)`` basis of ``{v ∈ R^n : Σ v = 0}``."""
    # Householder reflection that maps 1/√n to e_n; its first n - 1 columns span 1^⊥.
    v = np.full(n, 1.0 / np.sqrt(n))
    v[-1] -= 1.0
    norm_sq = float(v @ v)
    reflection = np.eye(n) - (2.0 / norm_sq) * np.outer(v, v)
    basis: np.ndarray = reflection[:, :-1]
    return basis


def minimize_quadratic_on_simplex(
    Q: np.ndarray,
    c: np.ndarray | None = None,
    *,
    x0: np.ndarray | None = None,
    tol: float = DEFAULT_TOL,
    max_iter: int | None = None,
) -> tuple[np.ndarray, bool]:
    """Exact minimiser of ``½ xᵀQx + cᵀx`` over the simplex (primal active-set method).

    ``Q`` must be symmetric positive semi-definite; it may be singular (then the minimiser
    need not be unique and one of them is returned). Each iteration solves the problem on
    the current face exactly (eigen-decomposition of the reduced Hessian; directions of zero
    curvature are followed to the boundary), then either adds the blocking bound or releases
    the bound with the most negative multiplier, so the method ends at a point satisfying the
    KKT conditions to rounding.

    Args:
        Q: ``(k, k)`` symmetric PSD matrix (any float dtype; solved in float64).
        c: ``(k,)`` linear term (default zero).
        x0: Feasible start (default uniform); bounds at zero start active.
        tol: Stopping tolerance: the KKT gap and every active bound's negative multiplier
            stay below ``tol · (max |Q_ij| + max |c_i|)``.
        max_iter: Iteration cap (default ``50 k + 100``).

    Returns:
        ``(x, converged)``.
    """
    Q = np.asarray(Q, dtype=np.float64)
    k = Q.shape[0]
    c = np.zeros(k) if c is None else np.asarray(c, dtype=np.float64)
    if k == 1:
        return np.ones(1), True
    x = np.full(k, 1.0 / k) if x0 is None else project_onto_simplex(x0)
    if not (np.isfinite(Q).all() and np.isfinite(c).all()):
        return x, False
    Q = (Q + Q.T) / 2
    if k == 2:
        # The minimiser of a convex parabola over x_1 ∈ [0, 1], x_2 = 1 − x_1.
        curvature = Q[0, 0] + Q[1, 1] - 2 * Q[0, 1]
        slope_at_0 = Q[0, 1] - Q[1, 1] + c[0] - c[1]
        if curvature > 0:
            x1 = float(np.clip(-slope_at_0 / curvature, 0.0, 1.0))
        else:
            x1 = 1.0 if slope_at_0 < 0 else 0.0
        return np.array([x1, 1.0 - x1]), True
    active = x <= 0.0
    x[active] = 0.0
    # Eigenvalues below this count as zero curvature.
    curvature_floor = 1e-13 * max(float(np.max(np.abs(np.diag(Q)))), 1e-300)
    # Gradient entries at the vertices are of this size: the scale of the KKT tolerance.
    scale = float(np.max(np.abs(Q))) + float(np.max(np.abs(c)))
    limit = 50 * k + 100 if max_iter is None else max_iter
    at_face_minimum = False
    for _ in range(limit):
        grad = Q @ x + c
        free = np.flatnonzero(~active)
        step = np.zeros(k)
        if free.size > 1 and not at_face_minimum:
            Z = _face_basis(free.size)
            reduced_grad = Z.T @ grad[free]
            eigenvalues, V = np.linalg.eigh(Z.T @ Q[np.ix_(free, free)] @ Z)
            coords = V.T @ reduced_grad
            curved = eigenvalues > curvature_floor
            flat_part = np.where(curved, 0.0, coords)
            grad_scale = float(np.max(np.abs(grad[free]))) + 1e-300
            if float(np.max(np.abs(flat_part))) > 1e-12 * grad_scale:
                # A direction of zero curvature and descent: follow it to the boundary.
                step[free] = -(Z @ (V @ flat_part)) * 1e30
            else:
                newton = np.where(curved, -coords / np.where(curved, eigenvalues, 1.0), 0.0)
                step[free] = Z @ (V @ newton)
        at_face_minimum = False
        if not step.any():
            # Minimiser on this face: check the multipliers of the active bounds.
            nu = float(np.mean(grad[free])) if free.size else float(np.min(grad))
            multipliers = np.where(active, grad - nu, np.inf)
            worst = int(np.argmin(multipliers))
            if not active.any() or multipliers[worst] >= -tol * scale:
                return x, True
            active[worst] = False
            continue
        # Longest step that keeps every free coordinate non-negative.
        shrinking = (step < 0) & ~active
        ratios = np.full(k, np.inf)
        with np.errstate(over="ignore"):
            ratios[shrinking] = -x[shrinking] / step[shrinking]
        blocking = int(np.argmin(ratios))
        t = min(1.0, float(ratios[blocking]))
        x = x + t * step
        if t < 1.0:
            active[blocking] = True
        else:
            at_face_minimum = True  # a full Newton step lands on the face's minimiser
        x[active] = 0.0
        x = np.maximum(x, 0.0)
        x /= x.sum()
    grad = Q @ x + c
    return x, simplex_gap(x, grad) <= tol * scale


def min_norm_on_simplex(gramian: np.ndarray) -> tuple[np.ndarray, float]:
    """MGDA's min-norm point: ``argmin_{w ∈ Δ} wᵀKw`` and its value ``wᵀKw``.

    Args:
        gramian: ``(k, k)`` Gramian ``K``.

    Returns:
        ``(w, value)``.
    """
    K = np.asarray(gramian, dtype=np.float64)
    w, _ = minimize_quadratic_on_simplex(K)
    return w, max(float(w @ K @ w), 0.0)


def _minimize_on_segment(fun: Objective, jac: Gradient) -> tuple[np.ndarray, bool]:
    """``k = 2``: bisection on the sign of ``φ'(x) = ∂₁f − ∂₂f`` along ``w = (x, 1 − x)``.

    The derivative of a convex function is monotone, so bisection converges to the minimiser
    (a kink included) to the resolution of float64, in at most 64 halvings.
    """

    def slope(x: float) -> float:
        g = np.asarray(jac(np.array([x, 1.0 - x])), dtype=np.float64)
        return float(g[0] - g[1])

    if not slope(0.0) < 0:
        x = 0.0
    elif not slope(1.0) > 0:
        x = 1.0
    else:
        low, high = 0.0, 1.0
        for _ in range(64):
            mid = 0.5 * (low + high)
            if mid in (low, high):
                break
            if slope(mid) < 0:
                low = mid
            else:
                high = mid
        x = low if fun(np.array([low, 1.0 - low])) <= fun(np.array([high, 1.0 - high])) else high
    w = np.array([x, 1.0 - x])
    return w, bool(np.isfinite(fun(w)))


def minimize_on_simplex(
    fun: Objective,
    jac: Gradient,
    k: int,
    *,
    hess: Hessian | None = None,
    x0: np.ndarray | None = None,
    tol: float = DEFAULT_TOL,
    max_iter: int = 200,
) -> tuple[np.ndarray, bool]:
    """Minimise a convex function over ``Δ_k = {w ≥ 0, Σ w = 1}`` to a stated KKT gap.

    ``k = 1`` is trivial; ``k = 2`` bisects on the sign of the derivative along
    ``w = (x, 1 − x)`` (exact to float64 resolution, kinks included); larger ``k`` runs
    sequential quadratic programming:
    each step minimises the second-order model ``gᵀd + ½ dᵀHd`` exactly over the simplex
    (`minimize_quadratic_on_simplex`), followed by an Armijo backtracking line search on
    ``fun``. ``H`` is ``hess(w)`` when given (quadratic convergence near the solution),
    otherwise a damped BFGS approximation. It stops when the KKT gap
    ``wᵀ∇f(w) − min_i ∇f(w)_i ≤ tol · max(‖∇f(w)‖∞, ‖∇f(w₀)‖∞)`` (`simplex_gap`; ``w₀``
    the start point).

    Args:
        fun: The objective, a function of ``w`` (shape ``(k,)``).
        jac: Its gradient.
        k: Dimension.
        hess: Its Hessian (optional; must be positive semi-definite).
        x0: Start point (default uniform).
        tol: Stopping tolerance on the relative KKT gap (see above).
        max_iter: Iteration cap.

    Returns:
        ``(w, success)``: the minimiser and whether the KKT gap met ``tol`` (for ``k = 2``:
        whether ``fun`` is finite there). On failure ``w`` is the best of the point
        reached and the simplex's vertices.
    """
    if k == 1:
        return np.ones(1), True
    if k == 2:
        return _minimize_on_segment(fun, jac)
    w = np.full(k, 1.0 / k) if x0 is None else project_onto_simplex(x0)
    value = fun(w)
    grad = np.asarray(jac(w), dtype=np.float64)
    # The gradient at the start sets the tolerance's scale when it vanishes at the solution.
    scale = float(np.max(np.abs(grad))) if np.isfinite(grad).all() else 0.0
    B = np.eye(k) * max(float(np.max(np.abs(grad))), 1e-300)  # BFGS model when no hess
    for _ in range(max_iter):
        if _converged(w, grad, tol, scale):
            return w, True
        H = np.asarray(hess(w), dtype=np.float64) if hess is not None else B
        if not (np.isfinite(H).all() and np.isfinite(grad).all()):
            break
        target, _ = minimize_quadratic_on_simplex(H, grad - H @ w, x0=w)
        direction = target - w
        slope = float(grad @ direction)
        if not slope < 0:
            # The model sees no descent: fall back to the Frank-Wolfe vertex.
            direction = np.eye(k)[int(np.argmin(grad))] - w
            slope = float(grad @ direction)
            if not slope < 0:
                break
        # What rounding in ``fun`` can hide: near the solution the model's predicted decrease
        # falls below it, and the (accurate) full step must not be refused for noise.
        slack = 1e-14 * (abs(value) + float(np.max(np.abs(grad))))
        t = 1.0
        while True:
            trial = _on_simplex(w + t * direction)
            trial_value = fun(trial)
            if trial_value <= value + 1e-4 * t * slope + slack:
                trial_grad = np.asarray(jac(trial), dtype=np.float64)
                break
            t *= 0.5
            if t < 1e-12:
                # Near the solution the decrease falls below the rounding of ``fun``: take
                # the full step if it shrinks the KKT gap (the model is accurate there).
                trial = _on_simplex(w + direction)
                trial_value = fun(trial)
                trial_grad = np.asarray(jac(trial), dtype=np.float64)
                if not (
                    np.isfinite(trial_value)
                    and simplex_gap(trial, trial_grad) < simplex_gap(w, grad)
                ):
                    return w, _converged(w, grad, tol, scale)
                break
        if hess is None:
            s, y = trial - w, trial_grad - grad
            sy, sBs = float(s @ y), float(s @ B @ s)
            if sBs > 0:
                # Powell's damping keeps B positive definite.
                theta = 1.0 if sy >= 0.2 * sBs else 0.8 * sBs / (sBs - sy)
                r = theta * y + (1 - theta) * (B @ s)
                B = B - np.outer(B @ s, B @ s) / sBs + np.outer(r, r) / float(s @ r)
        w, value, grad = trial, trial_value, trial_grad
    if _converged(w, grad, tol, scale):
        return w, True
    # Not certified (e.g. the minimum sits where ``fun`` is not differentiable): never return
    # a point worse than a vertex.
    vertices = np.eye(k)
    values = [fun(v) for v in vertices]
    best = int(np.argmin(values))
    if values[best] < value:
        w = vertices[best]
        return w, _converged(w, np.asarray(jac(w), dtype=np.float64), tol, scale)
    return w, False
