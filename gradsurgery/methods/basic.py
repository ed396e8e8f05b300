"""Plain joint training: the sum (what ``loss.backward()`` gives) and the mean."""

from __future__ import annotations

import torch

from ..core.method import Decision, Method
from ..core.signals import SignalMap
from ..core.table import GradientTable

__all__ = ["Mean", "Sum"]


def uniform_weights(k: int, value: float) -> torch.Tensor:
    """``k`` equal row weights."""
    return torch.full((k,), value, dtype=torch.float64)


class Sum(Method):
    """Plain joint training: the update is ``Σ_i g_i``, exactly what autograd gives for
    ``Σ_i L_i``. The baseline every other method is compared with.
    """

    name = "sum"

    def decide(self, table: GradientTable, signals: SignalMap | None) -> dict[str, Decision]:
        k = len(table.objectives)
        return {name: Decision(uniform_weights(k, 1.0)) for name in table.blocks}


class Mean(Method):
    """The average gradient ``(1/k) Σ_i g_i``.

    The one method outside the library's scale convention: on ``k`` identical rows ``g`` it
    returns ``g``, not ``k·g``, because taking the mean is its whole purpose.
    """

    name = "mean"

    def decide(self, table: GradientTable, signals: SignalMap | None) -> dict[str, Decision]:
        k = len(table.objectives)
        return {name: Decision(uniform_weights(k, 1.0 / k)) for name in table.blocks}
