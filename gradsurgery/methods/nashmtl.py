"""Nash-MTL: multi-task learning as a bargaining game (Navon et al., ICML 2022)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch

from ..core.checks import check
from ..core.families import Context, GramianWeighting, Scope
from ..core.method import Decision
from ..core.signals import SignalMap
from ..core.table import GradientTable
from ..registry import register
from ..solvers.fairness import alpha_fair_weights
from ..solvers.scaled_gramian import decision_gramian

__all__ = ["NashMTL", "nash_weights"]

Normalize = Literal["paper", "sum"]

#: State key of the one decision taken in global scope.
_GLOBAL = "\x00global"


def nash_weights(
    gramian: torch.Tensor | np.ndarray,
    *,
    max_norm: float | None = 1.0,
    normalize: Normalize = "paper",
    alpha: np.ndarray | None = None,
    warm_start: np.ndarray | None = None,
    log_scale: float = 0.0,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Nash-MTL's row weights from the Gramian.

    Args:
        gramian: ``(k, k)`` Gramian ``K`` (times ``exp(−log_scale)``).
        max_norm: ``"paper"`` mode: rescale the weights so that the update's norm
            ``√(αᵀKα)`` is at most this (``None``: never).
        normalize: ``"paper"`` (the bargaining solution α, then the norm clip) or ``"sum"``
            (``k·α/Σα``).
        alpha: Reuse this α instead of solving (``update_weights_every``).
        warm_start: Start of the solver (the scaled problem's last solution).
        log_scale: The true Gramian is ``exp(log_scale) · gramian`` (see
            `gradsurgery.solvers.scaled_gramian`).

    Returns:
        ``(weights, info)``; ``info`` holds ``alpha`` (the solution before post-processing,
        or None when the rows are Pareto-stationary), ``scaled`` (for warm starts),
        ``feasible``, ``converged``, ``iterations``, ``residual`` and ``reused``.
    """
    if isinstance(gramian, torch.Tensor):
        gramian = gramian.detach().to(device="cpu", dtype=torch.float64).numpy()
    K = np.asarray(gramian, dtype=np.float64)
    k = K.shape[0]
    info: dict[str, Any] = {"reused": alpha is not None}
    if alpha is None:
        solution, solved = alpha_fair_weights(K, 1.0, x0=warm_start, log_scale=log_scale)
        info.update(solved)
        alpha = solution if solved["feasible"] else None
    else:
        info.update(feasible=True, converged=True, iterations=0, residual=None, scaled=None)
    info["alpha"] = alpha
    if alpha is None:
        return torch.zeros(k, dtype=torch.float64), info
    weights = alpha.copy()
    if normalize == "sum":
        # From the scaled problem's solution when there is one: exact ratios even where α
        # itself was capped, and a sum that cannot overflow.
        base = info["scaled"] if info["scaled"] is not None else weights
        relative = base / float(base.max())
        weights = k * relative / float(relative.sum())
    elif max_norm is not None:
        # ‖Gᵀα‖ on the given (possibly rescaled) Gramian, without overflow.
        scaled = weights * math.exp(0.5 * log_scale)
        norm = math.sqrt(max(float(scaled @ K @ scaled), 0.0))
        if norm > max_norm:
            weights = weights * (max_norm / norm)
    return torch.from_numpy(weights), info


@register
class NashMTL(GramianWeighting):
    r"""Nash-MTL (Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik, Fetaya; ICML 2022,
    "Multi-Task Learning as a Bargaining Game").

    The update is the Nash bargaining solution: the direction ``d`` of norm at most ``ε``
    that maximises ``Σ_i log(d·g_i)``. It is ``d = Gᵀα`` with ``α > 0`` solving

    $$K\alpha = 1/\alpha \quad(\text{element-wise}),\qquad\text{i.e.}\quad
      \alpha_i\,(K\alpha)_i = 1 ,$$

    so ``d·g_i = 1/α_i > 0`` for every objective and ``‖d‖² = αᵀKα = k``.

    **Solver.** ``Kα = 1/α`` is the stationarity condition of the strictly convex
    ``f(α) = ½ αᵀKα − Σ_i log α_i``, minimised by damped Newton on the ``k x k`` Gramian
    (divided by its mean diagonal, so that the stopping rule
    ``max_i |α_i (Kα)_i − 1| ≤ 1e-10`` is scale-free), warm-started from the previous
    step's solution. The paper's concave-convex procedure with cvxpy/ECOS reaches the same
    fixed point; this library does not depend on cvxpy.

    **No solution** exists when some non-negative, non-zero combination of the rows is zero
    (Pareto-stationary rows, or a zero row): ``f`` is then unbounded below. This is decided
    first, on MGDA's min-norm point (squared norm below ``1e-10`` of the mean squared row
    norm), and the weights are then zero; the warm start is kept.

    **Scale.** Not 1-homogeneous: ``‖d‖ = √k`` whatever the gradients' scale (degree 0).
    ``normalize="paper"`` (default) keeps the paper's α and then, as the reference code's
    ``clip_grad_norm_`` after the weighted backward, rescales the weights so that
    ``‖d‖ ≤ max_norm`` (default 1, so for ``k ≥ 2`` the update is the unit vector
    ``d/√k``). ``normalize="sum"`` returns ``k·α/Σα`` instead (no clipping), which follows
    the library's scale convention (``k`` identical rows give their sum).

    Deliberate deviations from the reference code:

    * the exact Newton solver replaces the CCP/ECOS loop (``optim_niter = 20``), which
      also removes its failure at α = 1 when ``K1`` has a zero entry (the reference then
      keeps α = 1, i.e. the plain sum);
    * Pareto-stationary rows give zero weights instead of whatever the solver returned;
    * the norm clip acts on the weights (as TorchJD), per block in ``scope="block"``; the
      reference clips the gradient of all shared parameters together (``scope="global"``).

    State: per block, the last α (the weights reused between updates and the solver's warm
    start), kept by objective name (it follows a reordered table and is ignored when the
    objectives change), and the step count.

    Args:
        max_norm: Largest update norm in ``"paper"`` mode (``None``: no clipping). Ignored
            by ``normalize="sum"``.
        update_weights_every: Solve every this many steps and reuse α in between (the
            reuse still applies the norm clip to the current rows).
        normalize: ``"paper"`` or ``"sum"``, see above.
        scope: ``"block"`` or ``"global"`` (one decision on all blocks together).

    Tiny gradients: when every row is shorter than about ``1e-140`` (a Gramian below
    float64's precise range), the decision is taken on the rows' Gramian after an exact
    power-of-two rescaling; weights beyond float64's range (subnormal rows) are capped at
    about ``1.8e308`` and ``out_of_range`` is set.

    Report details: ``alpha`` (α before clipping or normalising, None when there is no
    solution), ``feasible``, ``converged``, ``iterations``, ``residual``, ``reused``,
    ``out_of_range``.
    """

    name = "nashmtl"
    stateful = True

    def __init__(
        self,
        *,
        max_norm: float | None = 1.0,
        update_weights_every: int = 1,
        normalize: Normalize = "paper",
        scope: Scope = "block",
    ) -> None:
        super().__init__(scope=scope)
        self.max_norm: float | None = check(
            "max_norm", max_norm, "float", low=0.0, low_open=True, optional=True
        )
        self.update_weights_every: int = check(
            "update_weights_every", update_weights_every, "int", low=1
        )
        self.normalize: Normalize = check("normalize", normalize, "str", options=("paper", "sum"))
        # Per block: the objectives, the last α and the scaled problem's solution.
        self._saved: dict[str, tuple[tuple[str, ...], np.ndarray, np.ndarray]] = {}
        self._step = 0

    def decide(self, table: GradientTable, signals: SignalMap | None) -> dict[str, Decision]:
        decisions = super().decide(table, signals)
        self._step += 1
        return decisions

    def weigh(self, context: Context) -> Decision:
        key = context.block if context.block is not None else _GLOBAL
        names = context.objectives
        last = warm = None
        saved = self._saved.get(key)
        if saved is not None and set(saved[0]) == set(names):
            # α belongs to the objectives, whatever the row order.
            order = [saved[0].index(name) for name in names]
            last, warm = saved[1][order], saved[2][order]
        reuse = last if self._step % self.update_weights_every != 0 else None
        gramian, log_scale = decision_gramian(context)
        weights, info = nash_weights(
            gramian,
            max_norm=self.max_norm,
            normalize=self.normalize,
            alpha=reuse,
            warm_start=warm,
            log_scale=log_scale,
        )
        if info["alpha"] is not None and not info["reused"]:
            self._saved[key] = (names, info["alpha"], info["scaled"])
        alpha = info.pop("alpha")
        info.pop("scaled")
        info.pop("update_norm", None)
        info["alpha"] = None if alpha is None else alpha.tolist()
        return Decision(weights, details=info)

    def reset(self) -> None:
        super().reset()
        self._saved.clear()
        self._step = 0

    def _get_state(self) -> dict[str, Any]:
        return {
            "step": self._step,
            "blocks": {
                key: {
                    "objectives": list(names),
                    "alpha": torch.from_numpy(alpha.copy()),
                    "scaled": torch.from_numpy(scaled.copy()),
                }
                for key, (names, alpha, scaled) in self._saved.items()
            },
        }

    def _set_state(self, state: Mapping[str, Any]) -> None:
        self._step = int(state["step"])
        self._saved = {
            key: (
                tuple(entry["objectives"]),
                entry["alpha"].numpy().copy(),
                entry["scaled"].numpy().copy(),
            )
            for key, entry in state["blocks"].items()
        }
