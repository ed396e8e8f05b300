"""PCGrad: projecting conflicting gradients (Yu et al., NeurIPS 2020)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from ..core.checks import check
from ..core.families import Context, GramianWeighting, Scope
from ..core.method import Decision
from ..core.rng import SeededGenerator
from ..registry import register
from ..solvers.projection import project_conflicting

__all__ = ["PCGrad", "pcgrad_weights"]


def pcgrad_weights(
    gramian: torch.Tensor,
    orders: torch.Tensor | Sequence[Sequence[int]],
    reduction: Literal["sum", "mean"] = "sum",
) -> tuple[torch.Tensor, torch.Tensor]:
    """PCGrad's row weights from the Gramian and the visiting orders.

    Args:
        gramian: ``(k, k)`` Gramian of the gradient rows.
        orders: ``orders[i]``: the order in which row ``i`` visits the other rows (a
            ``(k, k − 1)`` integer tensor or nested sequences).
        reduction: ``"sum"`` (paper) or ``"mean"`` of the projected rows.

    Returns:
        ``(weights, projected)``: ``(k,)`` weights over the original rows and a ``(k,)``
        boolean mask of the rows that were projected.
    """
    coefficients, projected = project_conflicting(gramian, orders)
    weights = coefficients.sum(0)
    if reduction == "mean":
        weights = weights / gramian.shape[0]
    return weights, projected


@register
class PCGrad(GramianWeighting):
    r"""PCGrad (Yu, Kumar, Gupta, Levine, Hausman, Finn; NeurIPS 2020, "Gradient Surgery for
    Multi-Task Learning"), Algorithm 1.

    Each objective's gradient visits the other objectives' gradients in a fresh random order;
    whenever the running gradient conflicts with an original gradient ``g_j``
    (``g_i^{PC}·g_j < 0``) its component along ``g_j`` is removed:

    $$g_i^{PC} \leftarrow g_i^{PC} - \frac{g_i^{PC}\cdot g_j}{\|g_j\|^2}\, g_j .$$

    The update is ``Σ_i g_i^{PC}``.

    Implementation: every projected row is tracked as coefficients over the original rows, so
    the projections cost ``O(k²)`` on the ``k x k`` Gramian and the update is one weighted
    pass over the ``(k, P)`` gradients.

    Deliberate choices (all match the paper unless noted):

    * projections are against the original ``g_j``, never ``g_j^{PC}``; ``j = i`` is skipped;
    * only strictly negative dot products trigger a projection; a zero ``g_j`` never does
      (no division by zero, where the paper divides);
    * the visiting order comes from a private, seedable generator (the official TF code
      discards its shuffle; PyTorch ports use the global RNG);
    * ``reduction="sum"`` (paper) is the default and follows the library's scale
      convention; ``"mean"`` gives the CAGrad paper's restatement.

    For ``k ≥ 3`` a later projection may re-introduce a conflict with an earlier ``g_j``; the
    paper's guarantee ``g_i^{PC}·g_j ≥ 0`` holds for the last ``g_j`` visited and for ``k = 2``.

    Decides on the device: ``sync=False`` keeps the step free of host synchronisation (see
    the On-device step page).

    Args:
        reduction: ``"sum"`` or ``"mean"`` of the projected rows.
        seed: Seed of the visiting-order generator (used when ``generator`` is None).
        generator: A ``torch.Generator`` to draw the orders from.
        scope: ``"block"`` (per block, fresh orders for each) or ``"global"`` (one decision
            on all blocks together, as the reference code on all shared parameters).

    Report details: ``order`` (the visiting orders of this step).
    """

    name = "pcgrad"
    stateful = True
    on_device = True

    def __init__(
        self,
        *,
        reduction: Literal["sum", "mean"] = "sum",
        seed: int = 0,
        generator: torch.Generator | None = None,
        scope: Scope = "block",
    ) -> None:
        super().__init__(scope=scope)
        self.reduction: Literal["sum", "mean"] = check(
            "reduction", reduction, "str", options=("sum", "mean")
        )
        self.seed: int = check("seed", seed, "int")
        self._rng = SeededGenerator(seed, generator)

    def _orders(self, k: int) -> torch.Tensor:
        """``(k, k − 1)``: row ``i`` is a fresh permutation of the other rows."""
        perms = self._rng.permutations(k, k)
        others = perms != torch.arange(k)[:, None]
        return perms[others].reshape(k, k - 1)

    def weigh(self, context: Context) -> Decision:
        orders = self._orders(context.k)
        weights, projected = pcgrad_weights(context.gramian, orders, self.reduction)
        if context.table.synchronous:
            names = tuple(o for o, p in zip(context.objectives, projected.tolist()) if p)
            return Decision(weights, projected=names, details={"order": orders.tolist()})
        return Decision(weights, projected=projected, details={"order": orders})

    def reset(self) -> None:
        super().reset()
        self._rng.reset()

    def _get_state(self) -> dict[str, Any]:
        return self._rng.state()

    def _set_state(self, state: Mapping[str, Any]) -> None:
        self._rng.load(state)
