"""The shared shape of UW and IMTL-L: one learned scalar per objective, stepped by the method.

Both weigh the rows with a function of the learned vector ``s`` and then take one optimizer
step on ``s`` with the gradient of their own loss at the current values; only those two
functions and the report's name for ``s`` differ.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from ..core.checks import check
from ..core.families import Context, LossWeighting
from ..core.method import Decision
from ..solvers.learned import LearnedVector, Optimizer, checked_losses

__all__ = ["LearnedScales"]


class LearnedScales(LossWeighting):
    """A loss weighting with one learned scalar per objective (see UW and IMTL-L)."""

    stateful = True
    detail: ClassVar[str] = "s"
    """The report's name for ``s``."""

    def __init__(
        self,
        *,
        init: float = 0.0,
        optimizer: Optimizer = "adam",
        lr: float = 1e-3,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        self.init: float = check("init", init, "float")
        self.optimizer: Optimizer = check("optimizer", optimizer, "str", options=("adam", "sgd"))
        self.lr: float = check("lr", lr, "float", low=0.0)
        self.eps: float = check("eps", eps, "float", low=0.0, low_open=True)
        self._s = LearnedVector(self.init, self.optimizer, self.lr)

    @abc.abstractmethod
    def weights_of(self, s: torch.Tensor) -> torch.Tensor:
        """The row weights for the learned values ``s``."""

    @abc.abstractmethod
    def gradient_of(self, s: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """The gradient of the method's own loss with respect to ``s``."""

    def weigh_losses(self, context: Context) -> Decision:
        losses = checked_losses(context.table, type(self).__name__)
        self._s.bind(context.objectives, type(self).__name__)
        s = self._s.value
        weights = self.weights_of(s)
        grad = self.gradient_of(s, losses.clamp_min(self.eps))
        self._s.step(grad)
        return Decision(weights, details={self.detail: s.tolist(), "grad": grad.tolist()})

    def _values(self) -> dict[str, float]:
        names = self._s.names or ()
        return dict(zip(names, self._s.value.tolist()))

    def reset(self) -> None:
        super().reset()
        self._s.reset()

    def _get_state(self) -> dict[str, Any]:
        return {"s": self._s.state()}

    def _set_state(self, state: Mapping[str, Any]) -> None:
        self._s.load(state["s"])
