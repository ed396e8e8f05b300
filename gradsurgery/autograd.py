"""Autograd integration: ``gradsurgery.backward`` replaces ``loss.backward()``.

``backward`` is the composition of three public steps, each usable alone:

1. `gradient_table` — back-propagate the losses into a `gradsurgery.GradientTable`;
2. ``method.apply(table, signals)`` — one update per block and a report;
3. `write_grads` — accumulate the updates (and the plain gradients of the leaves outside
   the blocks) into ``.grad``.

Under data parallelism a synchronisation step runs between 1 and 2
(`gradsurgery.distributed.synchronize`): the ranks' tables and signals are averaged, so
every rank decides on the same table. Gradient accumulation (`gradsurgery.Accumulator`)
sums the tables of several micro-batches before one synchronisation and one decision.

Data flows one way: losses → table → (sync) → method → updates → ``.grad``. This module
knows nothing of any method's math.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch

from .core.blocks import BlockSpec, make_blocks
from .core.errors import GradSurgeryWarning, NonFiniteGradientError
from .core.gramian import GramianPolicy
from .core.method import Method, OnNonFinite
from .core.report import Report
from .core.signals import SignalMap
from .core.table import GradientTable
from .distributed import (
    ShardedEngine,
    agree,
    check_shardable,
    process_group_for,
    reshard_modules,
    set_local_grad,
    synchronize,
)
from .engines import AutoEngine, Engine, RepresentationEngine, get_engine
from .engines.representation import Features

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = ["Losses", "TableHook", "backward", "gradient_table", "write_grads"]

Losses = Mapping[str, torch.Tensor] | Sequence[torch.Tensor]
"""Objective names mapped to scalar losses, or a sequence of them (named ``"0"``, ...)."""

TableHook = Callable[[GradientTable], GradientTable | None]
"""Runs on the built table before any decision (e.g. a cross-process reduction); returns
the table to use, or ``None`` after changing it in place."""


def _check_loss(name: str, loss: object, what: str) -> torch.Tensor:
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"{what} {name!r}: loss is a {type(loss).__name__}, not a tensor")
    if loss.numel() != 1:
        raise ValueError(
            f"{what} {name!r}: loss must be a scalar, got shape {tuple(loss.shape)}; "
            "reduce it (e.g. .mean()) first"
        )
    if not loss.requires_grad:
        raise ValueError(
            f"{what} {name!r}: loss does not require grad (it depends on no "
            "parameter, or was computed under torch.no_grad())"
        )
    return loss.reshape(())


def _named(losses: object, what: str) -> dict[str, torch.Tensor]:
    if isinstance(losses, torch.Tensor):
        raise TypeError(
            f"{what} must be a mapping {{objective name: scalar loss}} or a sequence of "
            f"scalar losses, got one tensor; for a single loss use [loss]"
        )
    if isinstance(losses, Mapping):
        items = list(losses.items())
    elif isinstance(losses, Sequence) and not isinstance(losses, (str, bytes)):
        items = [(str(i), loss) for i, loss in enumerate(losses)]
    else:
        raise TypeError(
            f"{what} must be a mapping {{objective name: scalar loss}} or a sequence of "
            f"scalar losses, got {type(losses).__name__}"
        )
    out = {}
    for name, loss in items:
        if not isinstance(name, str):
            raise TypeError(f"objective names must be strings, got {name!r}")
        out[name] = _check_loss(name, loss, "objective" if what == "losses" else "extra loss")
    return out


def gradient_table(
    losses: Losses,
    blocks: Mapping[str, BlockSpec],
    *,
    engine: str | Engine = "auto",
    gramian: GramianPolicy | None = None,
    reduce: TableHook | None = None,
    extra: Losses | None = None,
    retain_graph: bool = False,
    features: Features | None = None,
) -> GradientTable:
    """Step 1: back-propagate every objective into a gradient table.

    The table is this process's own: under data parallelism `backward` averages it across
    ranks afterwards (`gradsurgery.distributed.synchronize`).

    Args:
        losses: Objective names mapped to scalar losses (the mapping's order is the row
            order), or a sequence of losses (objectives ``"0"``, ``"1"``, ...).
        blocks: Block names mapped to an ``nn.Module``, named parameters or an iterable of
            parameters; blocks must not overlap. Frozen parameters are skipped.
        engine: How to build the table: ``"auto"`` (default; the rule of
            `gradsurgery.engines.choose_engine`: ``"sharded"`` for FSDP2 shards,
            ``"representation"`` when ``features`` are given, ``"table"`` for small blocks,
            methods that read rows, data parallelism or accumulation, else ``"gramian"``),
            ``"table"`` (one ``autograd.grad`` pass per objective; exact), ``"gramian"``
            (exact, without the ``(k, P)`` rows), ``"representation"`` (decides on the
            gradients of each block's output; an approximation), ``"sharded"``
            (`gradsurgery.distributed.ShardedEngine`: one real ``backward`` per objective,
            FSDP reduce-scatters each) or an engine object.
        gramian: Where and in which dtype the blocks' Gramians are kept.
        reduce: A hook run on the table before any decision (e.g. averaging the rows across
            processes).
        extra: Losses outside the surgery (e.g. a regularizer on the heads, even one that
            reaches no block): their plain gradient is added to every leaf they reach, block
            parameters included, after the method's update.
        retain_graph: Keep the graph after the last pass.
        features: ``{block: the block's output tensor(s)}`` for the representation engine.

    Returns:
        The table; it knows the parameters, so `write_grads` can write it back.

    Raises:
        ValueError: On a non-scalar loss, a loss that requires no grad or reaches no block
            parameter, bad blocks (see `gradsurgery.core.make_blocks`), a sparse gradient
            in a block, reentrant checkpointing, or a block no objective reaches.
        TypeError: On arguments of the wrong type.
    """
    table = _build(
        losses,
        blocks,
        engine=engine,
        gramian=gramian,
        extra=extra,
        retain_graph=retain_graph,
        features=features,
    )
    return _hook(table, reduce)


def _hook(table: GradientTable, reduce: TableHook | None) -> GradientTable:
    if reduce is None:
        return table
    reduced = reduce(table)
    return table if reduced is None else reduced


def _resolve_engine(
    engine: str | Engine,
    blocks: Mapping[str, BlockSpec],
    *,
    method: Method | None = None,
    distributed: bool = False,
    features: Features | None = None,
) -> Engine:
    if features is not None and engine not in ("auto", RepresentationEngine.name):
        raise ValueError(
            f"features= is for the representation engine; engine={engine!r} does not use them"
        )
    if isinstance(engine, str) and engine == "auto":
        if reshard_modules(blocks):
            return ShardedEngine()
        if "torch.distributed.fsdp" in sys.modules and process_group_for() is not None:
            warnings.warn(
                "FSDP is loaded but no block parameter is an FSDP shard (DTensor): if the "
                "blocks' parameters are FSDP-managed (e.g. by the root's fully_shard only), "
                "their gradients would never reach the shards; fully_shard each block's module "
                "itself, or pass the sharded parameters. Pass engine='table' to silence this",
                GradSurgeryWarning,
                stacklevel=4,
            )
        return AutoEngine(method, distributed=distributed, features=features)
    if isinstance(engine, str) and engine == ShardedEngine.name:
        reshard_modules(blocks)
        return ShardedEngine()
    if isinstance(engine, str) and engine == RepresentationEngine.name:
        if features is None:
            raise ValueError("engine='representation' needs features={block: output tensor}")
        return RepresentationEngine(features)
    return get_engine(engine)


def _build(
    losses: Losses,
    blocks: Mapping[str, BlockSpec],
    *,
    engine: str | Engine,
    gramian: GramianPolicy | None,
    extra: Losses | None,
    retain_graph: bool,
    method: Method | None = None,
    distributed: bool = False,
    features: Features | None = None,
) -> GradientTable:
    named = _named(losses, "losses")
    if not named:
        raise ValueError("losses is empty: give at least one {objective: loss} entry")
    side = list(_named(extra, "extra").values()) if extra is not None else []
    builder = _resolve_engine(
        engine, blocks, method=method, distributed=distributed, features=features
    )
    made = make_blocks(blocks)
    table = builder.build(
        named, made, extra=side, policy=gramian or GramianPolicy(), retain_graph=retain_graph
    )
    for block in table.blocks.values():
        if not any(block.reached):
            raise ValueError(f"block {block.name!r}: no objective reaches any of its parameters")
    return table


def _build_agreed(
    group: ProcessGroup | None, batch_size: float | None, **kwargs: object
) -> GradientTable:
    """`_build`, but a failure on one rank is raised on every rank of ``group`` (the
    others would otherwise wait for it in the synchronisation)."""
    try:
        return _build(**kwargs)  # type: ignore[arg-type]
    except Exception:
        if group is not None:
            agree(group, None, batch_size)
        raise


def _decide_and_write(
    table: GradientTable,
    signals: SignalMap | None,
    method: Method,
    *,
    group: ProcessGroup | None,
    batch_size: float | None,
    reduce: TableHook | None,
    on_nonfinite: OnNonFinite,
    diagnostics: bool,
    host_sync: bool = True,
) -> Report:
    """Steps 2 and 3, with the synchronisation (when ``group`` is given) before them."""
    if on_nonfinite not in ("raise", "skip"):
        raise ValueError(f"on_nonfinite must be 'raise' or 'skip', got {on_nonfinite!r}")
    sharded = table.engine == ShardedEngine.name
    sync = None
    if group is not None:
        if sharded:
            check_shardable(method)
        table, signals, sync = synchronize(
            table,
            signals,
            process_group=group,
            batch_size=batch_size,
            gramian=method.uses_gramian or diagnostics,
        )
    table = _hook(table, reduce)
    if sync is not None and sync.nonfinite:
        where = "; ".join(f"block {n!r}, objective(s) {rows}" for n, rows in sync.nonfinite.items())
        message = f"non-finite gradient (NaN or Inf) on some rank in {where}"
        if on_nonfinite == "raise":
            raise NonFiniteGradientError(
                f"{message}; pass on_nonfinite='skip' to skip the surgery on such steps"
            )
        updates, report = method._plain_sum(table, note=f"skipped: {message}")
    else:
        updates, report = method.apply(
            table, signals, on_nonfinite=on_nonfinite, diagnostics=diagnostics, sync=host_sync
        )
    if sync is not None:
        report.notes.append(sync.describe())
    write_grads(table, updates, report, direct=group is not None or sharded)
    return report


def write_grads(
    table: GradientTable,
    updates: Mapping[str, torch.Tensor],
    report: Report | None = None,
    *,
    direct: bool = False,
) -> None:
    """Step 3: accumulate each block's update into its parameters' ``.grad``.

    Every leaf is written in one ``torch.autograd.backward`` call over the leaves, so
    ``.grad`` is set (when ``None``) or added to exactly as ``loss.backward()`` does, and
    each parameter's post-accumulate-grad hooks fire once. With ``direct=True`` (what
    `backward` does under data parallelism and for sharded tables) ``.grad`` is written
    without autograd: going through autograd would fire DistributedDataParallel's reducer
    and average the already averaged gradients a second time. The post-accumulate-grad
    hooks registered with ``Tensor.register_post_accumulate_grad_hook`` are then called
    directly, once per parameter. Block parameters receive their
    slice of the update (plus the block's `bypass` from extra losses); leaves outside the
    blocks receive the table's plain gradients. A block parameter that no objective reaches
    keeps its ``.grad`` untouched (noted in ``report``).

    Args:
        table: A table built by `gradient_table` (it knows the parameters).
        updates: ``{block: (P,) update}`` as returned by `gradsurgery.Method.apply`.
        report: If given, notes about unreached parameters are appended to it.
        direct: Write ``.grad`` without autograd (see above).

    Raises:
        ValueError: If the table was built from plain matrices, or an update is missing or
            has the wrong shape.
    """
    leaves: list[torch.Tensor] = []
    grads: list[torch.Tensor] = []
    for name, block in table.blocks.items():
        update = updates.get(name)
        if update is None:
            raise ValueError(f"no update for block {name!r}; got {sorted(updates)}")
        for param, grad in block.param_grads(update):
            leaves.append(param)
            grads.append(grad)
        if report is None or block.block is None:
            continue
        for param, pname, hit in zip(
            block.block.params, block.block.param_names, block.param_reached
        ):
            if not hit:
                report.notes.append(
                    f"block {name!r}: parameter {pname!r} (shape {tuple(param.shape)}) is "
                    "reached by no objective; its .grad was left untouched"
                )
        if block.block.frozen:
            report.notes.append(
                f"block {name!r}: {len(block.block.frozen)} frozen parameter(s) skipped "
                f"(requires_grad=False): {list(block.block.frozen)}"
            )
    for leaf, grad in table.outside:
        leaves.append(leaf)
        grads.append(grad.detach())
    if direct:
        # Leaves are written in place; a writer's non-leaf targets (a block's output) still
        # need autograd.
        through = [(t, g) for t, g in zip(leaves, grads) if not t.is_leaf]
        for leaf, grad in zip(leaves, grads):
            if leaf.is_leaf:
                set_local_grad(leaf, grad)
        if through:
            torch.autograd.backward([t for t, _ in through], grad_tensors=[g for _, g in through])
    elif leaves:
        torch.autograd.backward(leaves, grad_tensors=grads)


def backward(
    losses: Losses,
    blocks: Mapping[str, BlockSpec],
    method: Method,
    signals: SignalMap | None = None,
    *,
    on_nonfinite: OnNonFinite = "raise",
    diagnostics: bool = False,
    engine: str | Engine = "auto",
    gramian: GramianPolicy | None = None,
    reduce: TableHook | None = None,
    extra: Losses | None = None,
    retain_graph: bool = False,
    distributed: bool | None = None,
    process_group: ProcessGroup | None = None,
    batch_size: float | None = None,
    features: Features | None = None,
    sync: bool = True,
) -> Report:
    """Back-propagate several objectives, apply a method per block, write ``.grad``.

    Use it in place of ``loss.backward()``; the optimizer, LR scheduler, gradient clipping
    and ``zero_grad`` are used as usual. It is ``gradient_table`` → ``method.apply`` →
    ``write_grads``.

    What each parameter receives (accumulated into ``.grad`` like autograd: set when
    ``None``, added otherwise):

    * **Block parameters**: the method's update for their block. A parameter that some
      objective does not reach contributes zeros to that objective's row. A block parameter
      that *no* objective reaches keeps its ``.grad`` untouched (``None`` stays ``None``),
      as with autograd; the report lists it in its notes. Frozen parameters are skipped.
    * **Every other parameter the losses reach** (heads, discriminators, anything outside
      the blocks): exactly the gradient of the plain sum ``Σ_i L_i``, up to floating-point
      summation order.
    * **Extra losses** (``extra=``): their plain gradient, everywhere they reach.

    **Data parallelism.** When ``torch.distributed`` is initialized with more than one rank
    (in ``process_group``, default the world), the ranks' gradient tables are averaged
    *before* the method decides: every block's per-objective rows, the plain gradients of
    the parameters outside the blocks, the extra-loss gradients, the loss values and the
    signals (batch means), weighted by ``batch_size`` when given. Every rank then makes the
    same decision and writes the same ``.grad``: the step equals the single-process step
    on the concatenated batch (up to summation order). This works with the model wrapped
    in ``DistributedDataParallel`` (forward through the wrapper as usual) or unwrapped:
    ``.grad`` is written directly, so DDP's reducer never averages a second time. Under
    FSDP2 (``fully_shard``) the table is sharded and only ``k x k`` Gramians are summed
    (see `gradsurgery.distributed`). ``distributed=False`` opts out: each rank decides on
    its own table (and a DDP-wrapped model then averages the per-rank results).

    Hooks: module and tensor backward hooks run during each objective's pass (so ``k``
    times, seeing that objective's gradient); tensor hooks on the written leaves run once
    more on the final gradient, and post-accumulate-grad hooks run exactly once per
    parameter, as with ``loss.backward()``.

    Args:
        losses: Objective names mapped to scalar losses (the mapping's order is the row
            order of the gradient table), or a sequence of losses (named ``"0"``, ...).
        blocks: Block names mapped to modules, named parameters or parameters.
        method: The method, e.g. ``gradsurgery.PCGrad()``.
        signals: Per-(block, objective) scalars, e.g. ``{"video": {"cls": 0.8}}``.
        on_nonfinite: ``"raise"`` or ``"skip"``; see `gradsurgery.Method.apply`. Under
            data parallelism every rank sees the same non-finite rows and raises or skips
            together.
        diagnostics: Compute cosines and conflicts for the report even when the method
            does not need the Gramian.
        engine: See `gradient_table`.
        gramian: See `gradient_table`.
        reduce: A hook run on the table before any decision (after the averaging across
            ranks); see `gradient_table`.
        extra: See `gradient_table`.
        retain_graph: Keep the graph after the last backward pass.
        features: See `gradient_table`.
        distributed: ``None`` (default): average across ranks when ``torch.distributed``
            is initialized with more than one rank; ``False``: never; ``True``: always
            (raises if it is not initialized).
        process_group: The group to average over (default: the world).
        batch_size: This rank's local batch size: averages are weighted by it (give it on
            every rank when the ranks' batches differ in size).
        sync: ``False`` runs the step without host synchronisation: Gramians under
            ``GramianPolicy(device="native", rescale=False)``, the decision in torch on the
            device, the report's values read only when accessed (see
            `gradsurgery.Method.apply_on_device`). Needs a method with ``on_device = True``
            and ``on_nonfinite="skip"``; not combined with data parallelism (the ranks agree
            on their tables on the host).

    Returns:
        The method's `gradsurgery.Report` for this step.

    Raises:
        ValueError: On a non-scalar loss, a loss that requires no grad or reaches no block
            parameter, bad blocks, or a block no objective reaches.
        TypeError: On arguments of the wrong type.
        gradsurgery.distributed.DistributedError: If the ranks' tables differ in layout,
            or another rank failed to build its table.
    """
    if not isinstance(method, Method):
        raise TypeError(
            f"method must be a gradsurgery Method (e.g. gradsurgery.PCGrad()), "
            f"got {type(method).__name__}"
        )
    group = process_group_for(distributed, process_group)
    if not sync:
        gramian = _on_device_policy(method, gramian, on_nonfinite, group)
    table = _build_agreed(
        group,
        batch_size,
        losses=losses,
        blocks=blocks,
        engine=engine,
        gramian=gramian,
        extra=extra,
        retain_graph=retain_graph,
        method=method,
        distributed=group is not None,
        features=features,
    )
    return _decide_and_write(
        table,
        signals,
        method,
        group=group,
        batch_size=batch_size,
        reduce=reduce,
        on_nonfinite=on_nonfinite,
        diagnostics=diagnostics,
        host_sync=sync,
    )


def _on_device_policy(
    method: Method,
    gramian: GramianPolicy | None,
    on_nonfinite: OnNonFinite,
    group: ProcessGroup | None,
) -> GramianPolicy:
    """The Gramian policy of a ``sync=False`` step, after checking that one is possible."""
    method.check_on_device(on_nonfinite)  # before any backward pass
    if group is not None:
        raise ValueError(
            "sync=False is not available with data parallelism: the ranks check that their "
            "tables agree on the host; pass distributed=False or sync=True"
        )
    if gramian is None:
        return GramianPolicy(device="native", rescale=False)
    if gramian.synchronizes:
        raise ValueError(
            f"sync=False needs a Gramian policy that does not wait for the device, got "
            f"{gramian}; use GramianPolicy(device='native', rescale=False)"
        )
    return gramian
