"""Data-parallel training: every rank decides on the same gradient table.

Under data parallelism each rank sees its own slice of the batch. Gradient surgery is not
linear, so the mean over ranks of per-rank surgeries is not the surgery of the mean
gradient. `gradsurgery.backward` therefore averages the *inputs* of the decision across
ranks before the method runs, and every rank then makes the identical decision and writes
the identical ``.grad``. Two layouts exist:

* **replicated** (plain models, DDP): each rank holds whole gradient rows. One bucketed
  ``all_reduce`` averages every block's ``(k, P)`` rows, the plain gradients of the leaves
  outside the blocks, the loss values and the signals (`synchronize`).
* **sharded** (FSDP2, ``torch.distributed.fsdp.fully_shard``): each rank holds a shard of
  every row, already averaged by FSDP's reduce-scatter (`ShardedEngine` runs one real
  ``backward`` per objective and reads the shards). The block Gramian is the sum of the
  shards' Gramians, so one ``k x k`` all-reduce per block replaces the ``k x P`` one, and
  each rank combines its own shard with the common weights. Only methods whose decision
  is a function of the Gramian, the signals and the loss values can run this way
  (`check_shardable`).

Averages are batch means: pass each rank's local batch size (``batch_size=``) when the
ranks' batches differ, and every quantity is weighted by it, which makes the step equal to
the single-process step on the concatenated batch.

Every call starts with one small check (an ``all_reduce`` of 7 integers): that the ranks'
tables have the same layout, that all or none gave a batch size, and that no rank failed to
build its table. A failure anywhere is then raised on every rank instead of leaving the
others waiting in a collective.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from .core.blocks import Block
from .core.errors import NonFiniteGradientError
from .core.gramian import GramianPolicy, compute_gramian
from .core.method import Method
from .core.report import Report
from .core.signals import SignalMap
from .core.table import BlockGradients, GradientTable
from .engines.graph import reached_leaves

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = [
    "DistributedError",
    "ShardedEngine",
    "Sync",
    "check_shardable",
    "is_sharded",
    "process_group_for",
    "synchronize",
    "verify_decisions",
]

#: Small tensors are coalesced into buckets of at most this many bytes (as DDP's default).
BUCKET_BYTES = 25 * 1024 * 1024


class DistributedError(RuntimeError):
    """The ranks disagree (table layout, batch sizes), or another rank failed."""


def _dist() -> Any:
    import torch.distributed as dist

    return dist


def _dtensor_type() -> type | None:
    # Only a program that imported DTensor (FSDP2 does) can hold one: no import cost for
    # everyone else.
    module = sys.modules.get("torch.distributed.tensor")
    cls = getattr(module, "DTensor", None)
    return cls if isinstance(cls, type) else None


def is_sharded(tensor: torch.Tensor) -> bool:
    """Whether a parameter is a DTensor (as FSDP2's sharded parameters are)."""
    cls = _dtensor_type()
    return cls is not None and isinstance(tensor, cls)


def process_group_for(
    distributed: bool | None = None, process_group: ProcessGroup | None = None
) -> ProcessGroup | None:
    """The process group `gradsurgery.backward` averages over, or ``None`` (local run).

    Args:
        distributed: ``None`` (default): average when ``torch.distributed`` is initialized
            and the group has more than one rank. ``False``: never (each rank decides on
            its own table). ``True``: average, and raise if ``torch.distributed`` is not
            initialized.
        process_group: The group to average over (default: the world).

    Raises:
        RuntimeError: ``distributed=True`` or a group is given but ``torch.distributed`` is
            not initialized.
    """
    if distributed is False:
        return None
    dist = _dist()
    if not (dist.is_available() and dist.is_initialized()):
        if distributed or process_group is not None:
            raise RuntimeError(
                "distributed=True (or a process_group) needs an initialized default process "
                "group: call torch.distributed.init_process_group first (torchrun sets the "
                "environment it reads)"
            )
        return None
    group = process_group if process_group is not None else dist.group.WORLD
    if dist.get_world_size(group) <= 1:
        return None
    return group


@dataclass
class Sync:
    """What `synchronize` did on one step.

    Attributes:
        mode: ``"replicated"`` (rows averaged) or ``"sharded"`` (shard Gramians summed).
        world_size: Ranks in the group.
        collectives: All-reduce calls made by this rank, the layout check included.
        bytes: Bytes this rank handed to those all-reduces (payload, before the backend's
            own traffic: a ring all-reduce of ``B`` bytes sends about ``2B(n-1)/n``).
        nonfinite: ``{block: [objective, ...]}`` of rows holding NaN or Inf on some rank
            (sharded mode only: in replicated mode the averaged rows carry the NaN
            themselves), else ``None``.
    """

    mode: str
    world_size: int
    collectives: int = 0
    bytes: int = 0
    nonfinite: dict[str, list[str]] | None = None

    def describe(self) -> str:
        """A one-line note for the report."""
        kib = self.bytes / 1024
        return (
            f"distributed ({self.mode}): averaged over {self.world_size} ranks with "
            f"{self.collectives} all-reduce(s), {kib:.1f} KiB sent by this rank"
        )


def copy_block(
    block: BlockGradients,
    *,
    reached: tuple[bool, ...] | None = None,
    param_reached: tuple[bool, ...] | None = None,
    bypass: torch.Tensor | None = None,
) -> BlockGradients:
    """The same block (the same row tensors) with new reach flags or extra-loss gradient."""
    new = BlockGradients(
        block.name,
        block.matrix if block.has_rows else None,
        block.shapes,
        block.reached if reached is None else reached,
        block=block.block,
        param_reached=block.param_reached if param_reached is None else param_reached,
        bypass=block.bypass if bypass is None else bypass,
        policy=block.policy,
        source=block.source,
        writer=block.writer,
        numel=None if block.has_rows else block.numel,
    )
    if block.has_gramian:
        new.set_gramian(block.gramian)
    return new


def _require_rows(table: GradientTable) -> None:
    missing = [name for name, b in table.blocks.items() if not b.has_rows]
    if missing:
        raise ValueError(
            f"block(s) {missing}: the engine {table.engine!r} keeps no gradient rows, and the "
            "ranks' rows must be averaged before the decision (the Gramian of the mean is not "
            "the mean of the Gramians); use engine='table' under data parallelism"
        )


# -- agreement ---------------------------------------------------------------------------


def _signal_keys(signals: SignalMap | None) -> list[tuple[str, str]]:
    if signals is None:
        return []
    return sorted((str(b), str(o)) for b, per in signals.items() for o in per)


def _layout(table: GradientTable, signals: SignalMap | None, sharded: bool) -> str:
    lines = [f"mode: {'sharded' if sharded else 'replicated'}", f"objectives: {table.objectives}"]
    for name, block in table.blocks.items():
        width = "shard" if sharded else str(block.matrix.shape[1])
        lines.append(
            f"block {name!r}: width {width}, {len(block.shapes)} parameter(s), "
            f"{block.matrix.dtype}, extra-loss gradient {block.bypass is not None}"
        )
    lines.append(
        f"{len(table.outside)} parameter(s) outside the blocks: "
        + ", ".join(f"{g.numel()}x{str(g.dtype).removeprefix('torch.')}" for _, g in table.outside)
    )
    lines.append(f"loss values: {table.losses is not None}")
    lines.append(f"signals: {_signal_keys(signals)}")
    return "\n".join(lines)


def _fingerprint(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=7).digest(), "little")


def _control_device(group: ProcessGroup) -> torch.device:
    backend = str(_dist().get_backend(group))
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def agree(
    group: ProcessGroup,
    layout: str | None,
    batch_size: float | None,
    *,
    sharded: bool = False,
) -> int:
    """The layout check every synchronisation starts with (one all-reduce of 7 integers).

    A rank whose table could not be built calls it with ``layout=None``: every other rank
    then raises `DistributedError` and the failing rank returns to raise its own error.

    Returns:
        The number of collectives made (1; 2 when the layouts differ and are gathered for
        the error message).

    Raises:
        DistributedError: If another rank failed, the layouts differ, only some ranks gave a
            batch size, or (sharded) the batch sizes differ.
    """
    dist = _dist()
    failed = layout is None
    h = 0 if layout is None else _fingerprint(layout)
    given = int(batch_size is not None)
    size = round(batch_size * 1024) if batch_size is not None else 0
    flags = torch.tensor(
        [h, -h, given, -given, int(failed), size, -size],
        dtype=torch.int64,
        device=_control_device(group),
    )
    dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=group)
    top, neg_low, any_given, neg_all_given, any_failed, big, neg_small = flags.tolist()
    if any_failed:
        if failed:
            return 1
        raise DistributedError(
            "another rank failed while building its gradient table (its own error is raised "
            "there); this rank stops too instead of waiting for it"
        )
    if top != -neg_low:
        layouts: list[Any] = [None] * dist.get_world_size(group)
        dist.all_gather_object(layouts, layout, group=group)
        mine = dist.get_rank(group)
        other = next(i for i, text in enumerate(layouts) if text != layout)
        raise DistributedError(
            "the ranks' gradient tables differ, so they cannot be averaged (every rank must "
            "pass the same objectives, blocks and signal keys, and its losses must reach the "
            f"same parameters).\nrank {mine}:\n{layout}\nrank {other}:\n{layouts[other]}"
        )
    if any_given and neg_all_given == 0:
        raise DistributedError(
            "batch_size was given on some ranks only: give every rank's local batch size, or "
            "none (equal weights)"
        )
    if sharded and big != -neg_small:
        raise DistributedError(
            "under FSDP the ranks' gradients are averaged by FSDP with equal weights, so the "
            f"local batch sizes must be equal (got sizes from {-neg_small / 1024:g} to "
            f"{big / 1024:g}); drop the last uneven batch (drop_last=True)"
        )
    return 1


# -- bucketed all-reduce -----------------------------------------------------------------


class _Buckets:
    """Sum tensors across ranks in place: large contiguous ones alone, small ones coalesced
    into flat buffers of at most ``cap`` bytes per (device, dtype)."""

    def __init__(self, tensors: Sequence[torch.Tensor], cap: int) -> None:
        groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
        for t in tensors:
            groups.setdefault((t.device, t.dtype), []).append(t)
        self.items: list[tuple[torch.Tensor, list[torch.Tensor] | None]] = []
        for members in groups.values():
            pending: list[torch.Tensor] = []
            size = 0
            for t in members:
                nbytes = t.numel() * t.element_size()
                if nbytes >= cap and t.is_contiguous():
                    self.items.append((t, None))
                    continue
                if pending and size + nbytes > cap:
                    self._flush(pending)
                    pending, size = [], 0
                pending.append(t)
                size += nbytes
            if pending:
                self._flush(pending)

    def _flush(self, members: list[torch.Tensor]) -> None:
        flat = torch.cat([m.reshape(-1) for m in members])
        self.items.append((flat, members))

    @property
    def bytes(self) -> int:
        return sum(buf.numel() * buf.element_size() for buf, _ in self.items)

    def reduce(self, group: ProcessGroup) -> int:
        dist = _dist()
        works = [dist.all_reduce(buf, group=group, async_op=True) for buf, _ in self.items]
        for work in works:
            work.wait()
        return len(works)

    def finish(self, divide: float | None) -> None:
        """Divide every reduced buffer (if asked) and copy the flat ones back."""
        for buf, members in self.items:
            if divide is not None:
                buf.div_(divide)
            if members is None:
                continue
            offset = 0
            for m in members:
                n = m.numel()
                m.copy_(buf[offset : offset + n].view_as(m))
                offset += n


def _meta_dtype(tensors: Sequence[torch.Tensor], device: torch.device) -> torch.dtype:
    """float64, or float32 when that lets the small values ride in the data's bucket."""
    on_device = {t.dtype for t in tensors if t.device == device}
    if torch.float64 in on_device or torch.float32 not in on_device:
        return torch.float64
    return torch.float32


def _signal_values(
    signals: SignalMap | None, keys: list[tuple[str, str]], device: torch.device
) -> torch.Tensor:
    values = []
    for block, objective in keys:
        raw = signals[block][objective]  # type: ignore[index]
        if isinstance(raw, torch.Tensor):
            values.append(raw.detach().reshape(()).to(device=device, dtype=torch.float64))
        else:
            values.append(torch.tensor(float(raw), dtype=torch.float64, device=device))
    if not values:
        return torch.zeros(0, dtype=torch.float64, device=device)
    return torch.stack(values)


def _flags(table: GradientTable, device: torch.device) -> torch.Tensor:
    bits = [float(r) for b in table.blocks.values() for r in b.reached]
    bits += [float(r) for b in table.blocks.values() for r in b.param_reached]
    return torch.tensor(bits, dtype=torch.float64, device=device)


def _unpack_flags(
    table: GradientTable, flags: torch.Tensor
) -> list[tuple[tuple[bool, ...], tuple[bool, ...]]]:
    """Per block, ``(reached, param_reached)`` from the summed flags (sum > 0: some rank)."""
    bits = (flags > 0).tolist()
    blocks = list(table.blocks.values())
    reached = []
    offset = 0
    for _ in blocks:
        reached.append(tuple(bits[offset : offset + table.k]))
        offset += table.k
    out = []
    for row, block in zip(reached, blocks):
        n = len(block.param_reached)
        out.append((row, tuple(bits[offset : offset + n])))
        offset += n
    return out


def synchronize(
    table: GradientTable,
    signals: SignalMap | None = None,
    *,
    process_group: ProcessGroup | None = None,
    batch_size: float | None = None,
    gramian: bool = True,
    bucket_bytes: int = BUCKET_BYTES,
) -> tuple[GradientTable, SignalMap | None, Sync]:
    """Average a table and its signals across the ranks of a group, before any decision.

    Replicated tables (built by the ``"table"`` engine): every block's rows, its extra-loss
    gradient, the plain gradients of the leaves outside the blocks, the loss values and the
    signals are averaged (weighted by ``batch_size`` when given) in one bucketed
    ``all_reduce`` (plus the layout check). The rows are changed in place.

    Sharded tables (built by `ShardedEngine`): the rows are FSDP's averaged shards and stay
    local; the loss values and signals are averaged, the plain gradients of non-sharded
    leaves too, and, when ``gramian`` is true, each block's Gramian becomes the sum of the
    ranks' shard Gramians (`gradsurgery.BlockGradients.set_gramian`). Rows holding NaN or
    Inf on any rank are reported in `Sync.nonfinite` on every rank.

    Args:
        table: The local table.
        signals: The local signals (batch means).
        process_group: The group (default: the world).
        batch_size: This rank's local batch size, for weighted averages (give it on every
            rank or on none).
        gramian: Sharded tables only: sum the shard Gramians (skip it for methods that
            read no Gramian).
        bucket_bytes: Largest coalesced buffer.

    Returns:
        ``(table, signals, sync)``: the averaged table (the same rows, reduced in place),
        the averaged signals as floats, and what was sent.

    Raises:
        DistributedError: If the ranks' layouts differ or only some gave a batch size.
        ValueError: If ``batch_size`` is not positive.
    """
    dist = _dist()
    group = process_group if process_group is not None else dist.group.WORLD
    if batch_size is not None and not batch_size > 0:
        raise ValueError(f"batch_size must be positive, got {batch_size!r}")
    sharded = table.engine == ShardedEngine.name
    _require_rows(table)
    sync = Sync("sharded" if sharded else "replicated", dist.get_world_size(group))
    sync.collectives += agree(group, _layout(table, signals, sharded), batch_size, sharded=sharded)
    sync.bytes += 7 * 8
    device = next(iter(table.blocks.values())).matrix.device
    weight = 1.0 if batch_size is None else float(batch_size)
    keys = _signal_keys(signals)

    data: list[torch.Tensor] = []
    if not sharded:
        for block in table.blocks.values():
            data.append(block.matrix)
            if block.bypass is not None:
                data.append(block.bypass)
    data += [g for _, g in table.outside]
    if weight != 1.0 and data:
        torch._foreach_mul_(data, weight)

    small = [torch.tensor([weight], dtype=torch.float64, device=device)]
    if table.losses is not None:
        small.append(table.losses.to(device=device, dtype=torch.float64) * weight)
    small.append(_signal_values(signals, keys, device) * weight)
    small.append(_flags(table, device))
    gram_at = sum(t.numel() for t in small)
    grams: list[torch.Tensor] = []
    bad_at = gram_at
    if sharded:
        native = GramianPolicy(device="native", dtype=torch.float64)
        bad: list[torch.Tensor] = []
        for block in table.blocks.values():
            row_bad = (~torch.isfinite(block.matrix)).any(dim=1).to(torch.float64)
            if gramian:
                try:
                    if block.matrix.shape[1] == 0:  # this rank's shard is empty
                        g = torch.zeros(table.k, table.k, dtype=torch.float64, device=device)
                    else:
                        g = compute_gramian(block.matrix, native).to(device)
                except NonFiniteGradientError:
                    g = torch.full((table.k, table.k), float("nan"), dtype=torch.float64)
                    row_bad = torch.ones(table.k, dtype=torch.float64)
                grams.append(g.reshape(-1).to(device))
            bad.append(row_bad.to(device))
        small += [g for g in grams]
        bad_at = gram_at + sum(g.numel() for g in grams)
        small += bad
    # Shard Gramians stay in float64; otherwise the small values may ride in the data's bucket.
    meta = torch.cat(small).to(torch.float64 if sharded else _meta_dtype(data, device))
    buckets = _Buckets([meta, *data], bucket_bytes)
    sync.bytes += buckets.bytes
    sync.collectives += buckets.reduce(group)
    buckets.finish(None)
    total = float(meta[0])
    # Averages are divided by the summed weight; Gramians and flags are sums.
    if data:
        torch._foreach_div_(data, total)
    meta64 = meta.to(torch.float64)
    offset = 1
    losses = None
    if table.losses is not None:
        losses = (meta64[offset : offset + table.k] / total).to(table.losses.dtype)
        offset += table.k
    values = (meta64[offset : offset + len(keys)] / total).tolist()
    offset += len(keys)
    n_flags = sum(table.k + len(b.param_reached) for b in table.blocks.values())
    flags = _unpack_flags(table, meta64[offset : offset + n_flags])
    blocks = []
    for (reached, param_reached), block in zip(flags, table.blocks.values()):
        blocks.append(copy_block(block, reached=reached, param_reached=param_reached))
    out = GradientTable(
        table.objectives, blocks, losses=losses, outside=table.outside, engine=table.engine
    )
    if sharded:
        k2 = table.k * table.k
        for i, block in enumerate(out.blocks.values()):
            if gramian:
                summed = meta64[gram_at + i * k2 : gram_at + (i + 1) * k2].reshape(table.k, -1)
                place = block.policy
                target = block.matrix.device if place.device == "native" else torch.device("cpu")
                block.set_gramian(summed.to(device=target, dtype=place.dtype))
        bad_rows = meta64[bad_at : bad_at + table.k * len(out.blocks)] > 0
        found: dict[str, list[str]] = {}
        for i, name in enumerate(out.blocks):
            rows = bad_rows[i * table.k : (i + 1) * table.k].tolist()
            names = [o for o, b in zip(table.objectives, rows) if b]
            if names:
                found[name] = names
        sync.nonfinite = found or None
    averaged: dict[str, dict[str, float]] | None = None
    if signals is not None:
        averaged = {}
        for (block_name, objective), value in zip(keys, values):
            averaged.setdefault(block_name, {})[objective] = value
    return out, averaged, sync


# -- sharded (FSDP2) ---------------------------------------------------------------------


def check_shardable(method: Method) -> None:
    """Raise unless a method's decision can run on sharded rows.

    Under FSDP each rank holds a shard of every gradient row. A method can run sharded when
    its decision reads only the Gramians, the signals and the loss values, and its update
    is the weighted sum of the rows (the default `gradsurgery.Method.update`); element-wise
    methods (GradDrop) and methods that read the rows themselves (OGM-GE's noise scale is
    the standard deviation of each whole parameter's gradient) cannot.

    Raises:
        ValueError: Naming the method and why.
    """
    cls = type(method)
    if method.needs_rows or method.family == "elementwise" or cls.update is not Method.update:
        raise ValueError(
            f"{cls.__name__} forms its update from the gradient rows themselves (it overrides "
            "Method.update), but under FSDP each rank holds only a shard of every row. Use a "
            "method whose decision is a function of the Gramian, the signals and the loss "
            "values (e.g. Sum, Mean, PCGrad, CAGrad, GMP), or DDP instead of FSDP"
        )


def _local(t: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return t.to_local() if is_sharded(t) else t  # type: ignore[attr-defined]


def set_local_grad(param: torch.Tensor, grad: torch.Tensor) -> None:
    """Accumulate a gradient into ``param.grad`` without autograd (set when ``None``,
    added otherwise), in the parameter's layout; for a DTensor parameter ``grad`` is its
    local shard. The parameter's post-accumulate-grad hooks then run, as autograd's would.
    """
    with torch.no_grad():
        if is_sharded(param):
            from torch.distributed.tensor import DTensor

            local = _local(param)
            if param.grad is None:
                fresh = torch.empty_like(local).copy_(grad.view_as(local))
                param.grad = DTensor.from_local(
                    fresh,
                    param.device_mesh,  # type: ignore[attr-defined]
                    param.placements,  # type: ignore[attr-defined]
                    shape=param.shape,
                    stride=param.stride(),
                )
            else:
                _local(param.grad).add_(grad.view_as(local))
        elif param.grad is None:
            param.grad = torch.empty_like(param).copy_(grad.view_as(param))
        else:
            param.grad.add_(grad.view_as(param))
    hooks = getattr(param, "_post_accumulate_grad_hooks", None)
    if hooks:
        for hook in list(hooks.values()):
            hook(param)


class ShardedEngine:
    """Build a sharded table with one real ``backward`` per objective (for FSDP2).

    FSDP2 keeps each parameter as a DTensor shard and reduce-scatters (averages) the
    gradient of every backward pass into the shards' ``.grad``. This engine runs
    ``loss_i.backward()`` for each objective, moves each block parameter's reduced shard
    into row ``i`` of the block's local ``(k, P_local)`` matrix, and leaves the parameters
    outside the blocks to FSDP: their ``.grad`` accumulates ``Σ_i`` of the objectives'
    reduced gradients, exactly as ``sum(losses).backward()`` would. Leaves that FSDP does
    not manage (plain tensors outside every ``fully_shard``) get their local gradients
    captured into the table, so `synchronize` averages them.

    Cost: ``k`` FSDP backward passes, i.e. ``k`` reduce-scatters of the whole model (and
    ``k`` all-gathers of the parameters when they are resharded after forward).

    Every block parameter must be a DTensor: give blocks as modules that are themselves
    ``fully_shard``-ed (they are resharded first, so ``reshard_after_forward=False`` works
    too) or as the sharded parameters taken right after ``fully_shard``.
    """

    name = "sharded"

    def build(
        self,
        losses: Mapping[str, torch.Tensor],
        blocks: Sequence[Block],
        *,
        extra: Sequence[torch.Tensor] = (),
        policy: GramianPolicy,
        retain_graph: bool = False,
    ) -> GradientTable:
        """Run one backward pass per objective and gather each block's local rows."""
        for block in blocks:
            plain = [n for n, p in zip(block.param_names, block.params) if not is_sharded(p)]
            if plain:
                raise ValueError(
                    f"block {block.name!r}: parameter(s) {plain} are not sharded (DTensor) but "
                    "other block parameters are; under FSDP2 give blocks as fully_shard-ed "
                    "modules, or as the sharded parameters taken right after fully_shard"
                )
        names = list(losses)
        k = len(names)
        params = [p for b in blocks for p in b.params]
        ids = {id(p) for p in params}
        roots = [*losses.values(), *extra]
        plain_leaves = [
            t
            for t in reached_leaves(roots)
            if id(t) not in ids and not is_sharded(t) and t.requires_grad
        ]
        locals_ = [[_local(p) for p in b.params] for b in blocks]
        widths = [sum(t.numel() for t in loc) for loc in locals_]
        matrices = [
            torch.zeros(k, w, dtype=b.dtype, device=loc[0].device if loc else b.device)
            for b, w, loc in zip(blocks, widths, locals_)
        ]
        reached = [[False] * k for _ in blocks]
        param_reached = [[False] * len(b.params) for b in blocks]
        kept = {id(p): p.grad for p in params}
        kept_plain = {id(t): t.grad for t in plain_leaves}
        for p in params:
            p.grad = None
        for t in plain_leaves:
            t.grad = None

        def take(row: torch.Tensor | None, b: int, i: int | None) -> torch.Tensor | None:
            start = 0
            hit = False
            for j, p in enumerate(blocks[b].params):
                n = locals_[b][j].numel()
                g = p.grad
                if g is not None:
                    if row is None:
                        row = torch.zeros(
                            widths[b], dtype=matrices[b].dtype, device=matrices[b].device
                        )
                    row[start : start + n] = _local(g).reshape(-1)
                    p.grad = None
                    hit = True
                    param_reached[b][j] = param_reached[b][j] or i is not None
                start += n
            if i is not None and hit:
                reached[b][i] = True
            return row if hit else None

        try:
            for i, name in enumerate(names):
                keep = retain_graph or i < k - 1 or bool(extra)
                torch.autograd.backward(losses[name], retain_graph=keep)
                hits = [take(matrices[b][i], b, i) for b in range(len(blocks))]
                if all(h is None for h in hits):
                    raise ValueError(
                        f"objective {name!r} does not depend on any block parameter "
                        f"(blocks: {[b.name for b in blocks]}); pass a loss that reaches no "
                        "block through extra= instead"
                    )
            bypass: list[torch.Tensor | None] = [None] * len(blocks)
            if extra:
                total = extra[0] if len(extra) == 1 else torch.stack(list(extra)).sum()
                torch.autograd.backward(total, retain_graph=retain_graph)
                bypass = [take(None, b, None) for b in range(len(blocks))]
        finally:
            for p in params:
                p.grad = kept[id(p)]
        outside = []
        for t in plain_leaves:
            if t.grad is not None:
                outside.append((t, t.grad))
            t.grad = kept_plain[id(t)]
        return GradientTable.from_passes(
            losses,
            [
                BlockGradients(
                    block.name,
                    matrices[b],
                    tuple(t.shape for t in locals_[b]),
                    tuple(reached[b]),
                    block=block,
                    param_reached=tuple(param_reached[b]),
                    bypass=bypass[b],
                    policy=policy,
                )
                for b, block in enumerate(blocks)
            ],
            outside=outside,
            engine=self.name,
        )


def reshard_modules(blocks: Mapping[str, Any]) -> bool:
    """Reshard the FSDP2 modules given as blocks (so their parameters are the DTensor
    shards again); returns whether any block holds a sharded parameter afterwards."""
    fsdp = sys.modules.get("torch.distributed.fsdp")
    if fsdp is None:  # FSDP never imported: nothing can be sharded
        return False
    FSDPModule = fsdp.FSDPModule
    found = False
    for spec in blocks.values():
        if isinstance(spec, torch.nn.Module):
            for module in spec.modules():
                if isinstance(module, FSDPModule):
                    module.reshard()
            found = found or any(is_sharded(p) for p in spec.parameters())
        elif isinstance(spec, torch.Tensor):
            found = found or is_sharded(spec)
        elif isinstance(spec, Mapping):
            found = found or any(
                isinstance(v, torch.Tensor) and is_sharded(v) for v in spec.values()
            )
        elif isinstance(spec, (list, tuple)):
            for entry in spec:
                t = entry[1] if isinstance(entry, tuple) and len(entry) == 2 else entry
                found = found or (isinstance(t, torch.Tensor) and is_sharded(t))
    return found


def verify_decisions(report: Report, process_group: ProcessGroup | None = None) -> None:
    """Check that every rank made the same decision on this step (a debugging aid: one
    ``all_gather_object`` of the weights). Methods are seeded, so equal seeds give equal
    decisions; a method built with a different seed or generator on one rank is caught.

    Raises:
        DistributedError: Naming the first block whose weights differ.
    """
    dist = _dist()
    group = process_group if process_group is not None else dist.group.WORLD
    mine = {name: b.weights.tolist() for name, b in report.blocks.items()}
    everyone: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(everyone, mine, group=group)
    for rank, theirs in enumerate(everyone):
        if theirs != mine:
            block = next((b for b in mine if theirs.get(b) != mine[b]), None)
            raise DistributedError(
                f"rank {rank} decided differently from rank {dist.get_rank(group)}"
                + (f" on block {block!r}: {theirs.get(block)} vs {mine[block]}" if block else "")
                + "; build the method with the same seed on every rank"
            )
