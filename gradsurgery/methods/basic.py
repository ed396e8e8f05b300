"""Plain joint training: the sum (what ``loss.backward()`` gives) and the mean."""

from __future__ import annotations

import torch

from ..core.families import Context, GramianWeighting
from ..core.method import Decision, Kind
from ..registry import register

__all__ = ["Mean", "Sum", "uniform_weights"]

_BOTH: frozenset[Kind] = frozenset({"multitask", "multimodal"})


def uniform_weights(k: int, value: float, device: torch.device | None = None) -> torch.Tensor:
    """``k`` equal row weights (float64, on ``device``)."""
    return torch.full((k,), value, dtype=torch.float64, device=device)


@register
class Sum(GramianWeighting):
    """Plain joint training: the update is ``Σ_i g_i``, exactly what autograd gives for
    ``Σ_i L_i``. The baseline every other method is compared with. Decides on the device
    (``sync=False``).

    Args:
        scope: Accepted for uniformity with the other weightings; it changes nothing here.
    """

    name = "sum"
    kinds = _BOTH
    uses_gramian = False
    on_device = True

    def weigh(self, context: Context) -> Decision:
        return Decision(uniform_weights(context.k, 1.0, context.device))


@register
class Mean(GramianWeighting):
    """The average gradient ``(1/k) Σ_i g_i``.

    The one method outside the library's scale convention: on ``k`` identical rows ``g`` it
    returns ``g``, not ``k·g``, because taking the mean is its whole purpose. Decides on the
    device (``sync=False``).

    Args:
        scope: Accepted for uniformity with the other weightings; it changes nothing here.
    """

    name = "mean"
    kinds = _BOTH
    uses_gramian = False
    on_device = True

    def weigh(self, context: Context) -> Decision:
        return Decision(uniform_weights(context.k, 1.0 / context.k, context.device))
