"""FairGrad: α-fair resource allocation in multi-task learning (Ban & Ji, ICML 2024)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from ..core.checks import check
from ..core.families import Context, GramianWeighting, Scope
from ..core.method import Decision
from ..registry import register
from ..solvers.fairness import alpha_fair_weights
from ..solvers.scaled_gramian import decision_gramian

__all__ = ["FairGrad", "fairgrad_weights"]

Normalize = Literal["paper", "sum"]


def fairgrad_weights(
    gramian: torch.Tensor | np.ndarray,
    alpha: float,
    *,
    normalize: Normalize = "paper",
    log_scale: float = 0.0,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """FairGrad's row weights: the solution of ``K w = w^{−1/α}``, ``w > 0``.

    Args:
        gramian: ``(k, k)`` Gramian ``K`` (times ``exp(−log_scale)``).
        alpha: Fairness exponent (> 0).
        normalize: ``"paper"`` (``w`` itself) or ``"sum"`` (``k·w/Σw``).
        log_scale: The true Gramian is ``exp(log_scale) · gramian`` (see
            `gradsurgery.solvers.scaled_gramian`).

    Returns:
        ``(weights, info)``: zeros when the rows are Pareto-stationary (no solution);
        ``info`` holds ``feasible``, ``converged``, ``iterations``, ``residual``.
    """
    if isinstance(gramian, torch.Tensor):
        gramian = gramian.detach().to(device="cpu", dtype=torch.float64).numpy()
    K = np.asarray(gramian, dtype=np.float64)
    k = K.shape[0]
    w, info = alpha_fair_weights(K, alpha, log_scale=log_scale)
    scaled = info.pop("scaled")
    info.pop("update_norm")
    if normalize == "sum" and info["feasible"]:
        relative = scaled / float(scaled.max())
        w = k * relative / float(relative.sum())
    return torch.from_numpy(w), info


@register
class FairGrad(GramianWeighting):
    r"""FairGrad (Ban & Ji; ICML 2024, "Fair Resource Allocation in Multi-Task Learning"),
    Eq. 4.

    The update ``d = Gᵀw`` maximises the α-fair utility of the objectives' improvements
    ``d·g_i``; its weights solve

    $$K w = w^{-1/\alpha}\quad(\text{element-wise}),\qquad w > 0 ,$$

    so that ``d·g_i = w_i^{-1/α} > 0`` for every objective. ``α → 0`` approaches the
    utilitarian sum, ``α = 1`` is proportional fairness (Nash-MTL without its norm clip),
    ``α → ∞`` max-min fairness.

    **Solver.** For every ``α > 0`` the system is the stationarity condition of the strictly
    convex ``f(w) = ½ wᵀKw + h(w)`` with ``h'(w) = −w^{−1/α}``, minimised by damped Newton on
    the Gramian divided by its mean diagonal (stopping rule
    ``max_i |w_i^{1/α} (Kw)_i − 1| ≤ 1e-10``, or that quantity's rounding level, which only
    near-stationary rows reach). The reference code calls
    ``scipy.optimize.least_squares`` on the same residual from ``w = 1/k``.

    **No solution** exists for Pareto-stationary rows (a vanishing non-negative combination,
    e.g. a zero row): decided first on MGDA's min-norm point (squared norm below ``1e-10``
    of the mean squared row norm); the weights are then zero (the reference returns the
    least-squares point with a non-zero residual).

    **Scale.** With all rows multiplied by ``c`` the paper's update scales as
    ``c^{(1−α)/(1+α)}`` (degree 0 at ``α = 1``): no constant factor meets the library's
    convention. ``normalize="paper"`` (default) keeps the paper's weights;
    ``normalize="sum"`` returns ``k·w/Σw``, which is 1-homogeneous and gives ``k·g`` on
    ``k`` identical rows.

    Args:
        alpha: The fairness exponent α > 0 (default 1.0, LibMTL's; the paper tunes it per
            dataset). α = 0, the utilitarian limit, is `gradsurgery.Sum`.
        normalize: ``"paper"`` or ``"sum"``, see above.
        scope: ``"block"`` or ``"global"`` (one decision on all blocks together, as the
            reference on all shared parameters).

    Tiny gradients: when every row is shorter than about ``1e-140`` (a Gramian below
    float64's precise range), the decision is taken on the rows' Gramian after an exact
    power-of-two rescaling; weights beyond float64's range are capped at about ``1.8e308``
    and ``out_of_range`` is set (at α = 1 only for subnormal rows).

    Report details: ``feasible``, ``converged``, ``iterations``, ``residual``,
    ``out_of_range``.
    """

    name = "fairgrad"

    def __init__(
        self,
        *,
        alpha: float = 1.0,
        normalize: Normalize = "paper",
        scope: Scope = "block",
    ) -> None:
        super().__init__(scope=scope)
        self.alpha: float = check("alpha", alpha, "float", low=0.0, low_open=True)
        self.normalize: Normalize = check("normalize", normalize, "str", options=("paper", "sum"))

    def weigh(self, context: Context) -> Decision:
        gramian, log_scale = decision_gramian(context)
        weights, info = fairgrad_weights(
            gramian, self.alpha, normalize=self.normalize, log_scale=log_scale
        )
        return Decision(weights, details=info)
