"""CAGrad: conflict-averse gradient descent (Liu, Liu, Jin, Stone, Liu; NeurIPS 2021)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from ..core.checks import check
from ..core.families import Context, GramianWeighting, Scope
from ..core.method import Decision
from ..registry import register
from ..solvers.dual_cone import project_to_dual_cone
from ..solvers.simplex import min_norm_on_simplex, minimize_on_simplex

__all__ = ["CAGrad", "cagrad_weights"]

#: Squared norms below this fraction of the mean squared row norm count as zero.
_RELATIVE_EPS = 1e-12


def _rescale_factor(rescale: int, c: float) -> float:
    """The official code's ``rescale`` options: 0 → 1, 1 → 1 + c², 2 → 1 + c."""
    return {0: 1.0, 1: 1.0 + c * c, 2: 1.0 + c}[rescale]


def cagrad_weights(
    gramian: torch.Tensor,
    c: float,
    *,
    rescale: Literal[0, 1, 2] = 2,
    scale: Literal["sum", "mean"] = "sum",
) -> tuple[torch.Tensor, dict[str, Any]]:
    """CAGrad's row weights from the Gramian.

    Solves the dual ``min_{w ∈ Δ_k} g_wᵀ g_0 + c‖g_0‖ ‖g_w‖`` on the Gramian, then
    ``d = g_0 + (c‖g_0‖ / ‖g_w‖) g_w`` with ``g_0`` the mean row, rescaled.

    Args:
        gramian: ``(k, k)`` float64 Gramian.
        c: Radius of the ball around ``g_0``, relative to ``‖g_0‖``.
        rescale: ``0`` none, ``1`` divide by ``1 + c²`` (official NYU-v2 code), ``2`` divide
            by ``1 + c`` (official toy code).
        scale: ``"sum"`` multiplies by ``k`` (as the official code does to match a
            sum-of-losses scale); ``"mean"`` keeps the paper's mean scale.

    Returns:
        ``(weights, info)``: ``(k,)`` weights over the original rows, and ``w`` (the dual
        solution), ``lambda`` (the step along ``g_w``), ``solver_ok`` and ``degenerate``.
    """
    k = gramian.shape[0]
    G = gramian.numpy()
    size = float(np.trace(G)) / k
    b = np.full(k, 1.0 / k)
    info: dict[str, Any] = {"w": b.tolist(), "lambda": 0.0, "solver_ok": True, "degenerate": None}
    step = np.zeros(k)  # λ·w, the move away from g_0
    if size > 0 and c > 0:
        Gn = G / size
        g0_sq = float(b @ Gn @ b)
        if g0_sq <= _RELATIVE_EPS:
            info["degenerate"] = "mean gradient is zero"
        else:
            radius = c * np.sqrt(g0_sq)
            Gb = Gn @ b

            def fun(w: np.ndarray) -> float:
                return float(w @ Gb + radius * np.sqrt(max(float(w @ Gn @ w), 0.0)))

            def jac(w: np.ndarray) -> np.ndarray:
                gw = Gn @ w
                norm = np.sqrt(max(float(w @ gw), 0.0))
                out: np.ndarray = Gb + (radius / norm) * gw if norm > 0 else Gb
                return out

            def hess(w: np.ndarray) -> np.ndarray:
                gw = Gn @ w
                norm = np.sqrt(max(float(w @ gw), 0.0))
                if norm <= 0:
                    return np.zeros((k, k))
                out: np.ndarray = (radius / norm) * (Gn - np.outer(gw, gw) / norm**2)
                return out

            w, ok = minimize_on_simplex(fun, jac, k, hess=hess)
            # Pareto-stationary rows: 0 is in their convex hull and the dual may reach its
            # minimum there, where it is not differentiable (no gradient certificate).
            w_mn, mn_sq = min_norm_on_simplex(Gn)
            if mn_sq <= _RELATIVE_EPS and fun(w_mn) <= fun(w):
                w = w_mn
            gw_sq = float(w @ Gn @ w)
            info.update(w=w.tolist(), solver_ok=ok)
            if gw_sq <= _RELATIVE_EPS:
                info["degenerate"] = "g_w is zero"
                # The dual's optimum is 0, so the primal optimum is min_i g_i·d = 0: every
                # solution is non-conflicting. Take the one closest to g_0, the projection of
                # g_0 onto the dual cone (it lies in the ball by duality).
                step = project_to_dual_cone(Gn, b).weights - b
            else:
                lam = radius / np.sqrt(gw_sq)
                info["lambda"] = float(lam)
                step = lam * w
    # Sum scale is computed as 1 + k·λ·w (not k·(1/k + λ·w)) so that c = 0 gives exactly 1.
    weights = (1.0 + k * step) if scale == "sum" else (b + step)
    weights = weights / _rescale_factor(rescale, c)
    return torch.from_numpy(weights), info


@register
class CAGrad(GramianWeighting):
    r"""CAGrad (Liu, Liu, Jin, Stone, Liu; NeurIPS 2021, "Conflict-Averse Gradient Descent
    for Multi-task Learning").

    With ``g_0 = (1/k) Σ_i g_i``, CAGrad maximises the worst objective's improvement inside
    a ball around ``g_0``:

    $$\max_d \min_i \langle g_i, d\rangle \quad\text{s.t.}\quad \|d - g_0\| \le c\|g_0\|.$$

    Its dual over the simplex,
    $w^* = \arg\min_{w\in\Delta_k} g_w^\top g_0 + c\|g_0\|\,\|g_w\|$ with $g_w = \sum_i w_i g_i$,
    is solved on the ``k x k`` Gramian with `gradsurgery.solvers.simplex.minimize_on_simplex`
    (``k = 2``: bisection on the derivative; ``k > 2``: sequential quadratic programming with
    the exact Hessian, to a KKT gap of ``1e-10`` of the gradient's scale; the official code
    calls SciPy's SLSQP with finite differences), and

    $$d = g_0 + \frac{c\|g_0\|}{\|g_{w^*}\|}\, g_{w^*}.$$

    Deliberate deviations, each to keep the library's conventions:

    * **Scale.** The defaults ``rescale=2, scale="sum"`` return ``k·d/(1 + c)``, so ``k``
      identical rows give their sum as every method does. The official NYU-v2 setting is
      ``rescale=1`` (divide by ``1 + c²``) followed by ``×k``, i.e. ``rescale=1,
      scale="sum"``; the paper's ``d`` itself is ``rescale=0, scale="mean"``.
    * **Degenerate cases.** ``g_0 = 0`` returns ``g_0`` (zero). ``g_{w^*} = 0`` (the rows are
      Pareto-stationary: 0 is in their convex hull) means the best worst-case improvement is
      0, so every direction that conflicts with no row is optimal: the update is the one
      closest to ``g_0``, its projection onto the rows' dual cone, and the report says so
      (the official code divides by ``‖g_w‖ + 1e-8``). "Zero" is relative: below ``1e-12`` of
      the mean squared row norm.
    * **Solver failure** falls back to the uniform ``w`` and sets ``solver_ok=False``.

    ``c = 0`` gives ``g_0`` (scaled), i.e. exactly `gradsurgery.Sum` by default.
    The convergence guarantee of the paper needs ``0 ≤ c < 1``.

    Args:
        c: Ball radius relative to ``‖g_0‖`` (paper/official default 0.5).
        rescale: ``0``, ``1`` or ``2`` as above.
        scale: ``"sum"`` (multiply by ``k``) or ``"mean"``.
        scope: ``"block"`` or ``"global"`` (one decision on all blocks together).

    Report details: ``w`` (dual weights), ``lambda``, ``solver_ok``, ``degenerate``.
    """

    name = "cagrad"

    def __init__(
        self,
        *,
        c: float = 0.5,
        rescale: Literal[0, 1, 2] = 2,
        scale: Literal["sum", "mean"] = "sum",
        scope: Scope = "block",
    ) -> None:
        super().__init__(scope=scope)
        self.c: float = check("c", c, "float", low=0.0)
        self.rescale: Literal[0, 1, 2] = check("rescale", rescale, "int", options=(0, 1, 2))
        self.scale: Literal["sum", "mean"] = check("scale", scale, "str", options=("sum", "mean"))

    def weigh(self, context: Context) -> Decision:
        weights, info = cagrad_weights(
            context.gramian, self.c, rescale=self.rescale, scale=self.scale
        )
        return Decision(weights, details=info)
