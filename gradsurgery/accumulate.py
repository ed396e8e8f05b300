"""Gradient accumulation: sum the tables of several micro-batches, decide once.

Calling `gradsurgery.backward` once per micro-batch applies the method to each micro-batch
and adds the results: ``m(G₁) + m(G₂)``, which is not ``m(G₁ + G₂)`` for any method but
`gradsurgery.Sum`, and a stateful method (PCGrad's generator, OGM-GE's step counter)
advances once per micro-batch. An `Accumulator` keeps the per-objective rows instead:

    acc = gs.Accumulator(gs.PCGrad())
    for x, y in micro_batches:
        acc.backward(losses(x, y), blocks, signals, batch_size=len(x))  # rows add up
    report = acc.step()      # average across ranks once, decide once, write .grad
    optimizer.step(); optimizer.zero_grad()

The rows add up over micro-batches exactly as ``.grad`` does over ``loss.backward()``
calls, so scale each micro-batch's losses as usual (divide by the number of micro-batches
to get the whole batch's mean). Loss values add up the same way; signals, which are batch
means, are averaged over the micro-batches (weighted by ``batch_size`` when given).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

from .autograd import Losses, TableHook, _build_agreed, _decide_and_write
from .core.blocks import BlockSpec
from .core.gramian import GramianPolicy
from .core.method import Method, OnNonFinite
from .core.report import Report
from .core.signals import SignalMap
from .core.table import BlockGradients, GradientTable
from .distributed import copy_block, process_group_for
from .engines import Engine

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = ["Accumulator"]


def _signal_items(signals: SignalMap) -> dict[tuple[str, str], torch.Tensor]:
    out = {}
    for block, per in signals.items():
        for objective, value in per.items():
            if isinstance(value, torch.Tensor):
                out[(block, objective)] = value.detach().reshape(()).to(torch.float64)
            else:
                out[(block, objective)] = torch.tensor(float(value), dtype=torch.float64)
    return out


class Accumulator:
    """Accumulate per-objective gradient rows over micro-batches; decide once per step.

    Under data parallelism the accumulated table is averaged across ranks once, in `step`
    (like DDP's ``no_sync``: nothing is communicated during the micro-batches), and the
    model may be DDP-wrapped or not. Under FSDP2 each micro-batch's rows are FSDP's
    reduce-scattered shards and `step` sums the Gramians once.

    Args:
        method: The method deciding at each `step`.
        on_nonfinite: ``"raise"`` or ``"skip"``; see `gradsurgery.Method.apply`.
        diagnostics: Compute cosines and conflicts for the report.
        reduce: A hook run on the accumulated table before the decision.
        distributed: See `gradsurgery.backward`.
        process_group: See `gradsurgery.backward`.

    Attributes:
        micro_batches: The number of `backward` calls since the last `step`.
    """

    def __init__(
        self,
        method: Method,
        *,
        on_nonfinite: OnNonFinite = "raise",
        diagnostics: bool = False,
        reduce: TableHook | None = None,
        distributed: bool | None = None,
        process_group: ProcessGroup | None = None,
    ) -> None:
        if not isinstance(method, Method):
            raise TypeError(
                f"method must be a gradsurgery Method (e.g. gradsurgery.PCGrad()), "
                f"got {type(method).__name__}"
            )
        if on_nonfinite not in ("raise", "skip"):
            raise ValueError(f"on_nonfinite must be 'raise' or 'skip', got {on_nonfinite!r}")
        self.method = method
        self.on_nonfinite: OnNonFinite = on_nonfinite
        self.diagnostics = diagnostics
        self.reduce = reduce
        self.distributed = distributed
        self.process_group = process_group
        self.micro_batches = 0
        self._table: GradientTable | None = None
        self._outside: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._signals: dict[tuple[str, str], torch.Tensor] | None = None
        self._signal_weight = 0.0
        self._batch: float | None = None

    @property
    def pending(self) -> bool:
        """Whether micro-batches wait for a `step`."""
        return self.micro_batches > 0

    def reset(self) -> None:
        """Drop the accumulated micro-batches (the method's state is untouched)."""
        self.micro_batches = 0
        self._table = None
        self._outside = {}
        self._signals = None
        self._signal_weight = 0.0
        self._batch = None

    def backward(
        self,
        losses: Losses,
        blocks: Mapping[str, BlockSpec],
        signals: SignalMap | None = None,
        *,
        batch_size: float | None = None,
        engine: str | Engine = "auto",
        gramian: GramianPolicy | None = None,
        extra: Losses | None = None,
        retain_graph: bool = False,
    ) -> None:
        """Back-propagate one micro-batch and add its rows to the accumulated table.

        Nothing is written to ``.grad`` and the method does not run. Arguments are those
        of `gradsurgery.backward`; ``blocks`` and the objectives must be the same at every
        micro-batch of a step.

        Args:
            losses: This micro-batch's losses.
            blocks: The blocks.
            signals: This micro-batch's signals (batch means).
            batch_size: This micro-batch's size: weights the signals' average over the
                micro-batches, and (summed over them) this rank's share across ranks.
            engine: See `gradsurgery.gradient_table`.
            gramian: See `gradsurgery.gradient_table`.
            extra: See `gradsurgery.gradient_table`.
            retain_graph: Keep the graph after the last pass.

        Raises:
            ValueError: If the objectives or blocks differ from the earlier micro-batches',
                or ``batch_size`` is given for some micro-batches only.
        """
        if batch_size is not None and not batch_size > 0:
            raise ValueError(f"batch_size must be positive, got {batch_size!r}")
        if self.micro_batches and (batch_size is None) != (self._batch is None):
            raise ValueError(
                "batch_size was given for some micro-batches only: give it for every one or "
                "for none"
            )
        table = _build_agreed(
            None,
            None,
            losses=losses,
            blocks=blocks,
            engine=engine,
            gramian=gramian,
            extra=extra,
            retain_graph=retain_graph,
        )
        weight = 1.0 if batch_size is None else float(batch_size)
        if self._table is None:
            self._table = table
        else:
            self._table = _add(self._table, table)
        for leaf, grad in table.outside:
            prev = self._outside.get(id(leaf))
            self._outside[id(leaf)] = (leaf, grad if prev is None else prev[1].add_(grad))
        if signals is not None:
            items = _signal_items(signals)
            if self._signals is None:
                if self.micro_batches:
                    raise ValueError("signals were given for some micro-batches only")
                self._signals = {key: value * weight for key, value in items.items()}
            else:
                if set(items) != set(self._signals):
                    raise ValueError(
                        f"signal keys differ between micro-batches: {sorted(items)} vs "
                        f"{sorted(self._signals)}"
                    )
                for key, value in items.items():
                    self._signals[key] = self._signals[key] + value * weight
            self._signal_weight += weight
        elif self._signals is not None:
            raise ValueError("signals were given for some micro-batches only")
        self._batch = None if batch_size is None else (self._batch or 0.0) + float(batch_size)
        self.micro_batches += 1

    def table(self) -> GradientTable:
        """The accumulated (local) table so far.

        Raises:
            RuntimeError: If no micro-batch was accumulated.
        """
        if self._table is None:
            raise RuntimeError("no micro-batch accumulated: call Accumulator.backward first")
        t = self._table
        return GradientTable(
            t.objectives,
            list(t.blocks.values()),
            losses=t.losses,
            outside=list(self._outside.values()),
            engine=t.engine,
        )

    def signals(self) -> SignalMap | None:
        """The micro-batches' signals, averaged (``None`` if none were given)."""
        if self._signals is None:
            return None
        out: dict[str, dict[str, float]] = {}
        for (block, objective), total in self._signals.items():
            out.setdefault(block, {})[objective] = float(total) / self._signal_weight
        return out

    def step(self) -> Report:
        """Average across ranks (once), decide once on the accumulated rows, write
        ``.grad`` (accumulated like autograd), and start a new step.

        Returns:
            The method's report.

        Raises:
            RuntimeError: If no micro-batch was accumulated.
        """
        table = self.table()
        signals = self.signals()
        batch = self._batch
        self.reset()
        group = process_group_for(self.distributed, self.process_group)
        return _decide_and_write(
            table,
            signals,
            self.method,
            group=group,
            batch_size=batch,
            reduce=self.reduce,
            on_nonfinite=self.on_nonfinite,
            diagnostics=self.diagnostics,
        )

    def __repr__(self) -> str:
        return f"Accumulator({self.method!r}, micro_batches={self.micro_batches})"


def _add(total: GradientTable, table: GradientTable) -> GradientTable:
    """``total + table``, row by row (in place on ``total``'s tensors)."""
    if table.objectives != total.objectives:
        raise ValueError(
            f"objectives differ between micro-batches: {list(table.objectives)} vs "
            f"{list(total.objectives)}"
        )
    if list(table.blocks) != list(total.blocks) or table.engine != total.engine:
        raise ValueError(
            f"blocks differ between micro-batches: {list(table.blocks)} vs {list(total.blocks)}"
        )
    blocks: list[BlockGradients] = []
    for name, mine in total.blocks.items():
        new = table.blocks[name]
        same = (
            mine.block is not None
            and new.block is not None
            and [id(p) for p in mine.block.params] == [id(p) for p in new.block.params]
        )
        if not same or mine.numel != new.numel:
            raise ValueError(
                f"block {name!r} holds different parameters than at the earlier micro-batches"
            )
        if not (mine.has_rows and new.has_rows):
            raise ValueError(
                f"block {name!r}: the engine {table.engine!r} keeps no gradient rows, so "
                "micro-batches cannot be summed row by row; use engine='table'"
            )
        mine.matrix.add_(new.matrix)
        bypass = mine.bypass
        if new.bypass is not None:
            bypass = new.bypass if bypass is None else bypass.add_(new.bypass)
        blocks.append(
            copy_block(
                mine,
                reached=tuple(a or b for a, b in zip(mine.reached, new.reached)),
                param_reached=tuple(a or b for a, b in zip(mine.param_reached, new.param_reached)),
                bypass=bypass,
            )
        )
    losses = total.losses
    if losses is not None and table.losses is not None:
        losses = losses + table.losses
    return GradientTable(total.objectives, blocks, losses=losses, outside=(), engine=total.engine)
