"""UPGrad: unconflicting projection of gradients (Quinton & Rey, 2024)."""

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

__all__ = ["UPGrad", "upgrad_weights"]


def upgrad_weights(
    gramian: torch.Tensor | np.ndarray, preference: np.ndarray, *, regularization: float = 0.0
) -> tuple[torch.Tensor, np.ndarray, dict[str, Any]]:
    """UPGrad's row weights ``w = Σ_i v(p_i e_i)`` from the Gramian.

    ``regularization`` is passed to `gradsurgery.solvers.dual_cone.project_to_dual_cone`.

    Returns:
        ``(weights, projected, info)``: ``(k,)`` float64 weights, a ``(k,)`` boolean mask of
        the rows whose projection moved them (``v(p_i e_i) ≠ p_i e_i``), and the solver's
        ``kkt_residual``, ``iterations``, ``converged`` and ``dependent``.
    """
    U = np.diag(preference)
    result = project_to_dual_cone(gramian, U, regularization=regularization)
    projected = (result.weights != U).any(axis=1)
    info: dict[str, Any] = {
        "kkt_residual": result.kkt_residual,
        "iterations": result.iterations,
        "converged": result.converged,
        "dependent": result.dependent,
    }
    return torch.from_numpy(result.weights.sum(axis=0)), projected, info


@register
class UPGrad(GramianWeighting):
    r"""UPGrad (Quinton & Rey, 2024, "Jacobian Descent for Multi-Objective Optimization",
    arXiv 2406.16232).

    Every gradient is projected onto the dual cone of all gradients,
    ``{x : g_j·x ≥ 0 for every j}``, and the projections are combined with a preference
    ``p``. On the Gramian (Prop. 1 of the paper), the projection of ``Gᵀu`` is ``Gᵀv(u)`` with
    ``v(u) = argmin_{v ≥ u} vᵀKv``, so

    $$w = \sum_i v(p_i e_i), \qquad d = \sum_i w_i g_i .$$

    Properties: ``d·g_j ≥ 0`` for every ``j`` (no objective conflicts with the update, up to
    the regularisation below); ``d`` is linear under positive scaling of the gradients; it
    is the weighted sum when no pair of rows conflicts; for two conflicting rows it equals
    PCGrad's update.

    Scale: ``c = 1`` with the default ``p = 1`` (``k`` identical rows give their sum);
    TorchJD's default ``p = 1/k`` gives ``1/k`` of these weights. No state.

    Deliberate choices and deviations:

    * The projections are solved by an active-set method
      (`gradsurgery.solvers.dual_cone`) on the rows' cosine matrix ``C`` plus
      ``regularization · I`` (default ``1e-8``), to a stated KKT tolerance. The
      regularisation keeps the update reproducible (insensitive to the rounding of the
      Gramian) when rows are within about ``1e-4`` of exact opposition, where the dual cone
      is so thin that the exact projection is chaotic in the last bits of ``K``; its cost
      is a possible conflict ``cos(g_j, d) ≥ −δ·v̂_j`` — about ``1e-8`` in ordinary cases,
      at most about ``√(kδ)`` in such degenerate ones — and a relative change of the
      weights of order ``δ/λ`` (``λ`` the smallest eigenvalue of the active rows' cosine
      matrix; up to ``2e-5`` on random conflicting matrices with ``k ≤ 8``).
      ``regularization=0`` solves the exact problem. TorchJD and LibMTL call
      ``quadprog`` on the trace-normalised Gramian plus ``1e-4·I`` (and return the plain
      weights when the trace is below ``1e-4``, whatever the gradients' scale), so their
      weights differ from the exact ones in the fourth decimal, and their solver can fail
      on large Gramians.
    * On Pareto-stationary input the dual cone is ``{0}``: the update is 0 and the weights
      are not unique. A zero row's weight is arbitrary (its row contributes nothing); a row
      shorter than ``1e-100`` of the longest counts as zero.

    Args:
        preference: ``p``, one non-negative number per objective (default all ones).
        regularization: ``δ`` added to the diagonal of the cosine matrix before the
            projection (default ``1e-8``; ``0``: exact).
        scope: ``"block"`` or ``"global"`` (one decision on all blocks together).

    Report details: ``kkt_residual`` (the largest over the ``k`` projections, see
    `gradsurgery.solvers.dual_cone.dual_cone_kkt_residual`), ``iterations``,
    ``converged``, ``dependent`` (rows left out as numerically dependent; only without
    regularisation). ``projected`` lists the objectives whose gradient the projection moved.
    """

    name = "upgrad"

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
        weights, projected, info = upgrad_weights(
            decision_gramian(context)[0],
            preference_array(self.preference, context.k),
            regularization=self.regularization,
        )
        names = tuple(o for o, p in zip(context.objectives, projected.tolist()) if p)
        return Decision(weights, projected=names, details=info)
