"""Engines: how a gradient table is built from losses and blocks.

An engine has a ``name`` and a ``build(losses, blocks, *, extra, policy, retain_graph)``
method returning a `gradsurgery.GradientTable`: ``"table"`` (k ``autograd.grad`` passes,
exact for any model, holds the ``(k, P)`` rows), ``"gramian"`` (exact, memory-light: linear
layers factorized from their inputs and output gradients), ``"representation"`` (decides on
the gradients of each block's output; an approximation) and ``"auto"`` (chooses by a
documented rule, see `choose_engine`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import torch

from ..core.blocks import Block
from ..core.gramian import GramianPolicy
from ..core.table import GradientTable
from .auto import AutoEngine, choose_engine
from .gramian import GramianEngine
from .graph import reached_leaves
from .representation import RepresentationEngine
from .table import TableEngine

__all__ = [
    "ENGINES",
    "AutoEngine",
    "Engine",
    "GramianEngine",
    "RepresentationEngine",
    "TableEngine",
    "choose_engine",
    "get_engine",
    "reached_leaves",
]


class Engine(Protocol):
    """What `gradsurgery.gradient_table` needs of an engine."""

    name: str

    def build(
        self,
        losses: Mapping[str, torch.Tensor],
        blocks: Sequence[Block],
        *,
        extra: Sequence[torch.Tensor] = (),
        policy: GramianPolicy,
        retain_graph: bool = False,
    ) -> GradientTable:
        """Build the table."""
        ...


ENGINES: dict[str, type[Engine]] = {
    "table": TableEngine,
    "gramian": GramianEngine,
    "representation": RepresentationEngine,
}


def get_engine(engine: str | Engine) -> Engine:
    """An engine object from its name (or the object itself).

    Raises:
        KeyError: Unknown engine name (the message lists the known ones).
    """
    if isinstance(engine, str):
        cls = ENGINES.get(engine)
        if cls is None:
            raise KeyError(f"unknown engine {engine!r}; available engines: {sorted(ENGINES)}")
        return cls()
    if not hasattr(engine, "build"):
        raise TypeError(f"engine must be a name or an object with build(), got {engine!r}")
    return engine
