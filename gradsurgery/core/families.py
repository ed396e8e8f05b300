"""Method families: each owns the loop its members share, so a method is only its math.

* `GramianWeighting` — one function from a block's ``k x k`` Gramian (and state) to row
  weights; applied per block, or once over all blocks with ``scope="global"``.
* `CrossBlockMethod` — decides for all blocks at once from the table and the signals
  (multimodal balancing: OGM-GE, GMP, ...).
* `LossWeighting` — row weights from the objectives' loss values (and state), the same for
  every block.
* `ElementwiseMethod` — forms each block's update from the rows themselves (GradDrop).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from .checks import check
from .method import Decision, Family, Method, copy_decision
from .signals import SignalMap
from .table import BlockGradients, GradientTable

__all__ = [
    "Context",
    "CrossBlockMethod",
    "ElementwiseMethod",
    "GramianWeighting",
    "LossWeighting",
    "Scope",
]

Scope = Literal["block", "global"]


@dataclass
class Context:
    """What a weighting may read for one decision.

    Attributes:
        table: The whole gradient table.
        block: The block decided for, or ``None`` in global scope (one decision for all).
    """

    table: GradientTable
    block: str | None
    _gramian: torch.Tensor | None = field(default=None, repr=False)

    @property
    def gramian(self) -> torch.Tensor:
        """The block's ``(k, k)`` Gramian; in global scope the sum over every block's."""
        if self._gramian is None:
            if self.block is not None:
                self._gramian = self.table[self.block].gramian
            else:
                grams = [b.gramian for b in self.table.blocks.values()]
                total = grams[0].clone()
                for g in grams[1:]:
                    total += g.to(total.device)
                self._gramian = total
        return self._gramian

    @property
    def device(self) -> torch.device:
        """Where the decision runs (and its weights live): the host, or the rows' device in
        a step without host synchronisation."""
        if self.block is None:
            return self.table.decision_device
        return self.table[self.block].decision_device

    @property
    def objectives(self) -> tuple[str, ...]:
        """Objective names, in row order."""
        return self.table.objectives

    @property
    def k(self) -> int:
        """The number of objectives."""
        return self.table.k

    @property
    def losses(self) -> torch.Tensor:
        """The objectives' loss values as a float64 CPU tensor.

        Raises:
            ValueError: If the table carries none.
        """
        if self.table.losses is None:
            raise ValueError("this gradient table carries no loss values")
        return self.table.losses.to(device="cpu", dtype=torch.float64)


class GramianWeighting(Method):
    """A method that is a function of a block's Gramian (plus state): implement `weigh`.

    Args:
        scope: ``"block"`` decides per block; ``"global"`` decides once on the sum of the
            blocks' Gramians (the Gramian of all blocks' parameters taken together) and
            applies the same weights to every block, as reference code that treats all
            shared parameters as one vector does.
    """

    family: ClassVar[Family] = "gramian"
    uses_gramian: ClassVar[bool] = True

    def __init__(self, *, scope: Scope = "block") -> None:
        super().__init__()
        self.scope: Scope = check("scope", scope, "str", options=("block", "global"))

    @abc.abstractmethod
    def weigh(self, context: Context) -> Decision:
        """Row weights for one block (or for all blocks in global scope)."""

    def decide(self, table: GradientTable, signals: SignalMap | None) -> dict[str, Decision]:
        if self.scope == "global":
            shared = self.weigh(Context(table, None))
            return {name: copy_decision(shared) for name in table.blocks}
        return {name: self.weigh(Context(table, name)) for name in table.blocks}


class CrossBlockMethod(Method):
    """A method that decides for all blocks at once from the table and the signals."""

    family: ClassVar[Family] = "cross_block"


class LossWeighting(Method):
    """A method whose row weights come from the objectives' loss values: implement
    `weigh_losses`. The same weights apply to every block."""

    family: ClassVar[Family] = "loss"
    needs_losses: ClassVar[bool] = True

    @abc.abstractmethod
    def weigh_losses(self, context: Context) -> Decision:
        """Row weights from ``context.losses`` (and state)."""

    def decide(self, table: GradientTable, signals: SignalMap | None) -> dict[str, Decision]:
        shared = self.weigh_losses(Context(table, None))
        return {name: copy_decision(shared) for name in table.blocks}


class ElementwiseMethod(Method):
    """A method that forms each block's update from the rows themselves: implement
    `transform`. Its nominal weights are all ones (the report marks it non-linear)."""

    family: ClassVar[Family] = "elementwise"
    needs_rows: ClassVar[bool] = True

    def decide(self, table: GradientTable, signals: SignalMap | None) -> dict[str, Decision]:
        ones = torch.ones(table.k, dtype=torch.float64)
        return {name: Decision(ones.clone()) for name in table.blocks}

    @abc.abstractmethod
    def transform(self, block: BlockGradients, decision: Decision) -> torch.Tensor:
        """The ``(P,)`` update of one block."""

    def update(self, block: BlockGradients, decision: Decision) -> torch.Tensor:
        decision.linear = False
        return self.transform(block, decision)
