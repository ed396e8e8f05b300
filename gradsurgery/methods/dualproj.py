"""DualProj: the weighted sum projected onto the dual cone (Quinton & Rey, 2024; the
projection of GEM, Lopez-Paz & Ranzato, NeurIPS 2017)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..core.checks import check
from ..core.families import Context, GramianWeighting, Scope
from ..core.method import Decision
from ..registry import register
from ..solvers.dual_cone import project_to_dual_cone
from ..solvers.scaled_gramian import decision_gramian
from ._preference import check_preference, preference_array

__all__ = ["DualProj", "dualproj_weights"]


def dualproj_weights(
    gramian: torch.Tensor | np.ndarray, preference: np.ndarray, *, regularization: float = 0.0
) -> tuple[torch.Tensor, dict[str, Any]]:
    """DualProj's row weights ``w = v(p)`` from the Gramian.

    ``regularization`` is passed to `gradsurgery.solvers.dual_cone.project_to_dual_cone`.

    Returns:
        ``(weights, info)``: ``(k,)`` float64 weights and the solver's ``kkt_residual``,
        ``iterations``, ``converged`` and ``dependent``.
    """
    result = project_to_dual_cone(gramian, preference, regularization=regularization)
    info: dict[str, Any] = {
        "kkt_residual": result.kkt_residual,
        "iterations": result.iterations,
        "converged": result.converged,
        "dependent": result.dependent,
    }
    return torch.from_numpy(result.weights), info


@register
class DualProj(GramianWeighting):
    r"""DualProj (Quinton & Rey, 2024, "Jacobian Descent for Multi-Objective Optimization",
    arXiv 2406.16232): the projection of Gradient Episodic Memory (Lopez-Paz & Ranzato,
    NeurIPS 2017, "Gradient Episodic Memory for Continual Learning", Eq. 11) applied to the
    preference-weighted sum of the gradients.

    The weighted sum ``Gᵀp`` is projected onto the dual cone ``{x : g_j·x ≥ 0 for every
    j}``; on the Gramian the projection is ``Gᵀv(p)`` with

    $$w = v(p) = \arg\min_{v \ge p} v^\top K v, \qquad d = \sum_i w_i g_i .$$

    When ``Gᵀp`` already has a non-negative dot product with every row (boundary
    included), ``w = p`` exactly and the update is the plain weighted sum.

    Scale: ``c = 1`` with the default ``p = 1`` (``k`` identical rows give their sum);
    TorchJD's default ``p = 1/k`` gives ``1/k`` of these weights. No state.

    Deliberate choices and deviations: as `gradsurgery.UPGrad` — the projection is solved
    by an active-set method (`gradsurgery.solvers.dual_cone`) on the cosine matrix plus
    ``regularization · I`` (default ``1e-8``, for reproducibility on nearly opposite rows;
    ``0`` is exact), where TorchJD calls ``quadprog`` on the trace-normalised Gramian plus
    ``1e-4·I`` (weights differ in the fourth decimal). The regularisation never moves a
    sum that is already in the cone. On Pareto-stationary input the update is 0.

    Args:
        preference: ``p``, one non-negative number per objective (default all ones).
        regularization: ``δ`` added to the diagonal of the cosine matrix before the
            projection (default ``1e-8``; ``0``: exact).
        scope: ``"block"`` or ``"global"`` (one decision on all blocks together).

    Report details: ``kkt_residual`` (see
    `gradsurgery.solvers.dual_cone.dual_cone_kkt_residual`), ``iterations``,
    ``converged``, ``dependent`` (rows left out as numerically dependent; only without
    regularisation). ``projected`` lists the objectives whose constraint is active (the sum
    was projected against their gradient, ``w_i > p_i``).
    """

    name = "dualproj"

    def __init__(
        self,
        *,
        preference: Sequence[float] | None = None,
        regularization: float = 1e-8,
        scope: Scope = "block",
    ) -> None:
        super().__init__(scope=scope)
        self.preference = check_preference(preference)
        self.regularization: float = check(
            "regularization", regularization, "float", low=0.0, high=1.0
        )

    def weigh(self, context: Context) -> Decision:
        p = preference_array(self.preference, context.k)
        weights, info = dualproj_weights(
            decision_gramian(context)[0], p, regularization=self.regularization
        )
        active = (weights.numpy() > p).tolist()
        names = tuple(o for o, a in zip(context.objectives, active) if a)
        return Decision(weights, projected=names, details=info)
