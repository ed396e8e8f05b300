"""Autograd integration: ``gradsurgery.backward`` replaces ``loss.backward()``.

Data flows one way: losses → gradient table → method → updates → ``.grad``. This module
knows nothing of any method's math.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

import torch

from .core.blocks import Block, make_blocks
from .core.method import Method, OnNonFinite
from .core.report import Report
from .core.signals import SignalMap
from .core.table import GradientTable

__all__ = ["backward"]


def _check_losses(losses: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(losses, torch.Tensor) or not isinstance(losses, Mapping):
        raise TypeError(
            f"losses must be a mapping {{objective name: scalar loss}}, got {type(losses).__name__}"
        )
    if not losses:
        raise ValueError("losses is empty: give at least one {objective: loss} entry")
    out = {}
    for name, loss in losses.items():
        if not isinstance(name, str):
            raise TypeError(f"objective names must be strings, got {name!r}")
        if not isinstance(loss, torch.Tensor):
            raise TypeError(f"objective {name!r}: loss is a {type(loss).__name__}, not a tensor")
        if loss.numel() != 1:
            raise ValueError(
                f"objective {name!r}: loss must be a scalar, got shape {tuple(loss.shape)}; "
                "reduce it (e.g. .mean()) first"
            )
        if not loss.requires_grad:
            raise ValueError(
                f"objective {name!r}: loss does not require grad (it depends on no "
                "parameter, or was computed under torch.no_grad())"
            )
        out[name] = loss.reshape(())
    return out


def _leaves(losses: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """Every leaf tensor that requires grad and that some loss reaches, in a fixed order."""
    found: dict[int, torch.Tensor] = {}
    stack = []
    for loss in losses:
        if loss.grad_fn is None:
            found.setdefault(id(loss), loss)
        else:
            stack.append(loss.grad_fn)
    seen: set[torch.autograd.graph.Node] = set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if isinstance(variable, torch.Tensor):
            found.setdefault(id(variable), variable)
        stack.extend(child for child, _ in node.next_functions if child is not None)
    return list(found.values())


def _accumulate(param: torch.Tensor, grad: torch.Tensor) -> None:
    """Add ``grad`` into ``param.grad`` the way autograd does (set if None, else add)."""
    if param.grad is None:
        param.grad = grad.detach()
    else:
        param.grad.add_(grad)


def backward(
    losses: Mapping[str, torch.Tensor],
    blocks: Mapping[str, Iterable[torch.Tensor]],
    method: Method,
    signals: SignalMap | None = None,
    *,
    on_nonfinite: OnNonFinite = "raise",
    retain_graph: bool = False,
) -> Report:
    """Back-propagate several objectives, apply a method per block, write ``.grad``.

    Use it in place of ``loss.backward()``; the optimizer, LR scheduler, gradient clipping
    and ``zero_grad`` are used as usual.

    What each parameter receives (accumulated into ``.grad`` like autograd: set when
    ``None``, added otherwise):

    * **Block parameters**: the method's update for their block. A parameter that some
      objective does not reach contributes zeros to that objective's row. A block parameter
      that *no* objective reaches keeps its ``.grad`` untouched (``None`` stays ``None``),
      as with autograd; the report lists it in its notes.
    * **Every other parameter the losses reach** (heads, discriminators, anything outside
      the blocks): exactly the gradient of the plain sum ``Σ_i L_i``, up to floating-point
      summation order.

    Args:
        losses: Objective names mapped to scalar losses. The mapping's order is the row
            order of the gradient table.
        blocks: Block names mapped to iterables of parameters; blocks must not overlap.
        method: The method, e.g. ``gradsurgery.PCGrad()``.
        signals: Per-(block, objective) scalars, e.g. ``{"video": {"cls": 0.8}}``.
        on_nonfinite: ``"raise"`` or ``"skip"``; see `gradsurgery.Method.apply`.
        retain_graph: Keep the graph after the last objective's backward pass.

    Returns:
        The method's `gradsurgery.Report` for this step.

    Raises:
        ValueError: On a non-scalar loss, a loss that requires no grad or reaches no block
            parameter, empty or overlapping blocks, or a block no objective reaches.
        TypeError: On arguments of the wrong type.
    """
    if not isinstance(method, Method):
        raise TypeError(
            f"method must be a gradsurgery Method (e.g. gradsurgery.PCGrad()), "
            f"got {type(method).__name__}"
        )
    named = _check_losses(losses)
    made: tuple[Block, ...] = make_blocks(blocks)
    block_params = [p for b in made for p in b.params]
    block_ids = {id(p) for p in block_params}
    others = [t for t in _leaves(named.values()) if id(t) not in block_ids]
    inputs = block_params + others
    n_block = len(block_params)
    other_grads: list[torch.Tensor | None] = [None] * len(others)
    reached_params = [False] * n_block
    names = list(named)

    def rows() -> Iterator[Sequence[torch.Tensor | None]]:
        for i, name in enumerate(names):
            last = i == len(names) - 1
            grads = torch.autograd.grad(
                named[name],
                inputs,
                retain_graph=retain_graph or not last,
                allow_unused=True,
                materialize_grads=False,
            )
            block_part = grads[:n_block]
            if all(g is None for g in block_part):
                raise ValueError(
                    f"objective {name!r} does not depend on any block parameter "
                    f"(blocks: {[b.name for b in made]})"
                )
            for j, g in enumerate(block_part):
                reached_params[j] = reached_params[j] or g is not None
            for j, g in enumerate(grads[n_block:]):
                if g is not None:
                    prev = other_grads[j]
                    other_grads[j] = g if prev is None else prev + g
            yield block_part

    table = GradientTable.from_grads(names, made, rows())
    for block in made:
        reached = table[block.name].reached
        if not any(reached):
            raise ValueError(f"block {block.name!r}: no objective reaches any of its parameters")
    updates, report = method.apply(table, signals, on_nonfinite=on_nonfinite)

    start = 0
    for block in made:
        views = table[block.name].split(updates[block.name])
        for offset, (param, view) in enumerate(zip(block.params, views)):
            if reached_params[start + offset]:
                _accumulate(param, view)
            else:
                report.notes.append(
                    f"block {block.name!r}: parameter #{offset} (shape {tuple(param.shape)}) "
                    "is reached by no objective; its .grad was left untouched"
                )
        start += len(block.params)
    for param, grad in zip(others, other_grads):
        if grad is not None:
            _accumulate(param, grad)
    return report
