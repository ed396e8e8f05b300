"""``engine="auto"``: choose the engine from the method, the blocks' size and their device.

The rule, in order (the first that applies wins):

1. Block parameters sharded by FSDP2 → ``"sharded"`` (decided in `gradsurgery.backward`
   before this module is asked).
2. Features given (``features=``) → ``"representation"``: deciding on output gradients is
   an approximation, so it is only ever chosen on request.
3. No method known (a table built on its own), a method that reads the rows
   (`gradsurgery.Method.needs_rows`), data-parallel synchronization or gradient
   accumulation (which average or sum rows), or a single objective → ``"table"``.
4. Blocks on a device other than the CPU or CUDA → ``"table"`` (the Gramian engine reads
   saved tensors of the autograd graph, untested elsewhere).
5. Fewer than `GRAMIAN_MIN_NUMEL` numbers in the table (``k`` times the blocks' parameters)
   → ``"table"``: there, the fixed cost of reading the graph outweighs what is saved.
6. Otherwise → ``"gramian"``: exact, same update as ``"table"``, without the ``(k, P)``
   rows; faster whenever its linear layers are factorized.

Measured on 2 CPU cores (one thread): the two exact engines break even around ``k·P`` of
1-2·10⁵; at ``k·P`` = 6.6·10⁵ the Gramian engine's step is 0.6x the table engine's, at
10⁷ 0.45x. The CUDA threshold is the CPU one (not measured on a GPU).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..core.blocks import Block
from ..core.gramian import GramianPolicy
from ..core.method import Method
from ..core.table import GradientTable
from .gramian import GramianEngine
from .representation import Features, RepresentationEngine
from .table import TableEngine

__all__ = ["GRAMIAN_MIN_NUMEL", "AutoEngine", "choose_engine"]

#: The table size ``k·P`` from which ``"auto"`` prefers the Gramian engine.
GRAMIAN_MIN_NUMEL = 1 << 18


def choose_engine(
    blocks: Sequence[Block],
    k: int,
    *,
    method: Method | None = None,
    distributed: bool = False,
    rows: bool = False,
    features: bool = False,
) -> tuple[str, str]:
    """The engine ``"auto"`` picks, and why (see the module documentation for the rule).

    Args:
        blocks: The blocks of the step.
        k: The number of objectives.
        method: The method that will decide (``None``: unknown).
        distributed: Whether the table will be averaged across processes.
        rows: Whether the caller needs the rows themselves (`gradsurgery.Accumulator` sums
            them over micro-batches).
        features: Whether the blocks' output tensors were given.

    Returns:
        ``(engine name, reason)``.
    """
    if features:
        return "representation", "features were given"
    if method is None:
        return "table", "no method known: the table keeps every row"
    if method.needs_rows:
        return "table", f"{type(method).__name__} reads the gradient rows"
    if distributed:
        return "table", "data-parallel synchronization averages the rows"
    if rows:
        return "table", "the caller sums the rows (gradient accumulation)"
    if k < 2:
        return "table", "one objective: its row is the gradient itself"
    devices = {b.device.type for b in blocks}
    if not devices <= {"cpu", "cuda"}:
        return "table", f"blocks on {sorted(devices)}: the Gramian engine runs on CPU and CUDA"
    numel = k * sum(b.numel for b in blocks)
    if numel < GRAMIAN_MIN_NUMEL:
        return "table", f"small table (k·P = {numel:,} < {GRAMIAN_MIN_NUMEL:,})"
    return "gramian", f"k·P = {numel:,}: the exact Gramian without the rows"


class AutoEngine:
    """Chooses the engine per step with `choose_engine`, then builds with it.

    The table's ``engine`` names the engine chosen; `last_choice` keeps ``(name, reason)``.

    Args:
        method: The method that will decide.
        distributed: Whether the table will be averaged across processes.
        rows: Whether the caller needs the rows (`gradsurgery.Accumulator`).
        features: The blocks' output tensors (selects the representation engine).
    """

    name = "auto"

    def __init__(
        self,
        method: Method | None = None,
        *,
        distributed: bool = False,
        rows: bool = False,
        features: Features | None = None,
    ) -> None:
        self.method = method
        self.distributed = distributed
        self.rows = rows
        self.features = features
        self.last_choice: tuple[str, str] | None = None

    def __repr__(self) -> str:
        return f"AutoEngine(method={self.method!r}, distributed={self.distributed})"

    def build(
        self,
        losses: Mapping[str, torch.Tensor],
        blocks: Sequence[Block],
        *,
        extra: Sequence[torch.Tensor] = (),
        policy: GramianPolicy,
        retain_graph: bool = False,
    ) -> GradientTable:
        """Choose, then build with the chosen engine."""
        name, reason = choose_engine(
            blocks,
            len(losses),
            method=self.method,
            distributed=self.distributed,
            rows=self.rows,
            features=self.features is not None,
        )
        self.last_choice = (name, reason)
        engine: TableEngine | GramianEngine | RepresentationEngine
        if name == "representation":
            engine = RepresentationEngine(self.features)
        elif name == "gramian":
            engine = GramianEngine()
        else:
            engine = TableEngine()
        return engine.build(losses, blocks, extra=extra, policy=policy, retain_graph=retain_graph)
