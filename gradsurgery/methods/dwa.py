"""DWA: dynamic weight average (Liu, Johns & Davison; CVPR 2019)."""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any

import torch

from ..core.checks import check
from ..core.families import Context, LossWeighting
from ..core.method import Decision
from ..registry import register
from ..solvers.learned import checked_losses, reorder

__all__ = ["DWA", "dwa_weights"]


def dwa_weights(
    last: torch.Tensor, before: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(k·softmax(r/T), r)`` with the ratios ``r_i = L̄_i(t−1) / L̄_i(t−2)``.

    A zero denominator counts as the smallest positive float64 (a huge, finite ratio).
    """
    ratios = last / before.clamp_min(torch.finfo(torch.float64).tiny)
    return last.numel() * torch.softmax(ratios / temperature, dim=0), ratios


@register
class DWA(LossWeighting):
    r"""DWA, dynamic weight average (Liu, Johns, Davison; CVPR 2019, "End-to-End Multi-Task
    Learning with Attention").

    From the epoch-mean losses ``L̄_i`` of the last two finished epochs,

    $$r_i = \frac{\bar L_i(t-1)}{\bar L_i(t-2)}, \qquad
      w_i = k\,\frac{\exp(r_i/T)}{\sum_j \exp(r_j/T)},$$

    so an objective whose loss fell more slowly gets more weight; ``w = 1`` until two epochs
    have finished. ``Σ w = k`` (scale convention, factor 1).

    **Epochs.** Call `set_epoch` at each epoch (as with a sampler's ``set_epoch``): a new
    epoch number closes the running epoch, whose mean loss (over the calls made in it)
    enters the history; an epoch with no call adds nothing. Or give ``epoch_length=n``: every
    ``n`` calls then make an epoch by themselves (nash-mtl's variant averages windows of 25
    iterations). The weights of a call depend only on finished epochs; its losses are then
    added to the running epoch.

    Defaults: ``temperature=2`` (paper), ``epoch_length=None``.

    Deliberate deviations: nash-mtl's version also divides the weighted loss by ``k`` (not
    here); a zero epoch mean in the denominator counts as the smallest positive float; the
    losses must be finite and non-negative (else ``ValueError``).

    State: the epoch number, the calls in it, the running loss sums, the last two epoch
    means, bound to the objectives' names.

    Args:
        temperature: Softmax temperature ``T``.
        epoch_length: Calls per epoch (``None``: epochs are told with `set_epoch`).

    Report details: ``epoch``, ``ratios`` (``r``; ``None`` while fewer than two epochs
    have finished).
    """

    name = "dwa"
    stateful = True

    def __init__(self, *, temperature: float = 2.0, epoch_length: int | None = None) -> None:
        super().__init__()
        self.temperature: float = check("temperature", temperature, "float", low=0.0, low_open=True)
        self.epoch_length: int | None = check(
            "epoch_length", epoch_length, "int", low=1, optional=True
        )
        self._clear()

    def _clear(self) -> None:
        self.epoch = 0
        self._names: tuple[str, ...] | None = None
        self._calls = 0
        self._sums = torch.zeros(0, dtype=torch.float64)
        self._means: list[torch.Tensor] = []  # newest first, at most two

    def set_epoch(self, epoch: int) -> None:
        """Tell the method the current epoch; a new number closes the running epoch."""
        epoch = operator.index(epoch)
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if epoch != self.epoch:
            self._close()
            self.epoch = epoch

    def _close(self) -> None:
        if self._calls:
            self._means = [self._sums / self._calls, *self._means][:2]
        self._sums = torch.zeros_like(self._sums)
        self._calls = 0

    def weigh_losses(self, context: Context) -> Decision:
        losses = checked_losses(context.table, type(self).__name__)
        order = reorder(self._names, context.objectives, type(self).__name__)
        if order is not None:
            self._sums = self._sums[order]
            self._means = [m[order] for m in self._means]
        if self._names is None:
            self._sums = torch.zeros_like(losses)
        self._names = context.objectives
        if self.epoch_length is not None and self._calls >= self.epoch_length:
            self._close()
            self.epoch += 1
        ratios: list[float] | None = None
        if len(self._means) == 2:
            weights, r = dwa_weights(self._means[0], self._means[1], self.temperature)
            ratios = r.tolist()
        else:
            weights = torch.ones_like(losses)
        self._sums = self._sums + losses
        self._calls += 1
        return Decision(weights, details={"epoch": self.epoch, "ratios": ratios})

    def reset(self) -> None:
        super().reset()
        self._clear()

    def _get_state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "names": None if self._names is None else list(self._names),
            "calls": self._calls,
            "sums": self._sums.clone(),
            "means": [m.clone() for m in self._means],
        }

    def _set_state(self, state: Mapping[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        names = state["names"]
        self._names = None if names is None else tuple(str(n) for n in names)
        self._calls = int(state["calls"])
        self._sums = torch.as_tensor(state["sums"], dtype=torch.float64).clone()
        self._means = [torch.as_tensor(m, dtype=torch.float64).clone() for m in state["means"]]
