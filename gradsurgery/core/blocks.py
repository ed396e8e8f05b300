"""Blocks: named, disjoint sets of parameters that a method updates as one unit.

A block is given the way a training loop already holds its parameters: an ``nn.Module``
(``model.trunk``), its ``named_parameters()``, a ``{name: tensor}`` mapping, or any iterable
of tensors. Parameters are then named by their module path (``0.weight``) in errors and
reports, or by their position (``#3``) when no names were given.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["Block", "BlockSpec", "make_blocks"]

BlockSpec = (
    nn.Module
    | torch.Tensor
    | Mapping[str, torch.Tensor]
    | Iterable[torch.Tensor]
    | Iterable[tuple[str, torch.Tensor]]
)
"""What a block may be given as: a module, a tensor, named parameters or parameters."""


@dataclass(frozen=True)
class Block:
    """A named set of parameters, flattened in a fixed order.

    Attributes:
        name: The block's name, e.g. ``"video"`` or ``"trunk"``.
        params: The block's trainable parameters, in the order their gradients are flattened.
        param_names: One name per parameter (module path, or ``#i`` when none was given).
        frozen: Names of the parameters skipped because they do not require grad.
    """

    name: str
    params: tuple[torch.Tensor, ...]
    param_names: tuple[str, ...]
    frozen: tuple[str, ...] = ()

    @property
    def numel(self) -> int:
        """Number of scalars ``P`` in the block."""
        return sum(p.numel() for p in self.params)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype shared by every parameter of the block."""
        return self.params[0].dtype

    @property
    def device(self) -> torch.device:
        """The device shared by every parameter of the block."""
        return self.params[0].device


def _describe(p: torch.Tensor, name: str) -> str:
    return f"parameter {name!r} (shape {tuple(p.shape)}, dtype {p.dtype}, device {p.device})"


def _entries(block: str, spec: Any) -> Iterator[tuple[str | None, Any]]:
    """Yield ``(name or None, tensor)`` for every entry of a block spec."""
    if isinstance(spec, nn.Module):
        yield from spec.named_parameters()
        return
    if isinstance(spec, torch.Tensor):
        yield None, spec
        return
    if isinstance(spec, Mapping):
        for key, value in spec.items():
            if not isinstance(key, str):
                raise TypeError(f"block {block!r}: parameter names must be strings, got {key!r}")
            yield key, value
        return
    if isinstance(spec, (str, bytes)) or not isinstance(spec, Iterable):
        raise TypeError(
            f"block {block!r}: expected an nn.Module, a tensor, named parameters or an "
            f"iterable of parameters, got {type(spec).__name__}"
        )
    one_shot = iter(spec) is spec
    count = 0
    for entry in spec:
        count += 1
        if (
            isinstance(entry, tuple)
            and len(entry) == 2
            and isinstance(entry[0], str)
            and isinstance(entry[1], torch.Tensor)
        ):
            yield entry[0], entry[1]
        else:
            yield None, entry
    if count == 0 and one_shot:
        raise ValueError(
            f"block {block!r} was given an exhausted iterator (a generator such as "
            "model.parameters() can be read only once, e.g. when the blocks are built outside "
            "the training loop); pass the module itself or a list of its parameters"
        )


def _check_tensor(block: str, p: Any, name: str) -> torch.Tensor:
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"block {block!r}: entry {name} is a {type(p).__name__}, not a tensor")
    if p.is_sparse or p.layout != torch.strided:
        raise ValueError(f"block {block!r}: {_describe(p, name)} is sparse; blocks hold dense ones")
    if p.is_complex():
        raise ValueError(
            f"block {block!r}: {_describe(p, name)} is complex; the Gramian of complex "
            "gradients is not a real inner product, so conflicts would be missed. Store it as "
            "a real tensor (torch.view_as_real) or leave it out of the blocks"
        )
    if not p.is_floating_point():
        raise ValueError(f"block {block!r}: {_describe(p, name)} is not floating point")
    if p.requires_grad and not p.is_leaf:
        raise ValueError(
            f"block {block!r}: {_describe(p, name)} is not a leaf tensor (it is computed, "
            f"grad_fn={type(p.grad_fn).__name__}); autograd writes .grad only to leaves. "
            "Give the leaves it is computed from, e.g. the module's parameters() (under "
            "weight_norm or a parametrization: its 'original' tensors)"
        )
    return p


def make_blocks(blocks: Mapping[str, BlockSpec]) -> tuple[Block, ...]:
    """Validate a ``{name: parameters}`` mapping and turn it into blocks.

    Args:
        blocks: Block names mapped to an ``nn.Module``, named parameters (``{name: tensor}``
            or ``(name, tensor)`` pairs), or an iterable of parameters. A parameter listed
            twice in one block is kept once. Parameters that do not require grad (frozen)
            are skipped and listed in `Block.frozen`.

    Returns:
        The blocks, in the mapping's order.

    Raises:
        ValueError: If there are no blocks, a block has no trainable parameter, an iterator
            was already exhausted, a parameter belongs to two blocks, a block mixes dtypes
            or devices, or a parameter is sparse, complex, integral or not a leaf.
        TypeError: If a block name is not a string or an entry is not a tensor.
    """
    if isinstance(blocks, (torch.Tensor, nn.Module)) or not isinstance(blocks, Mapping):
        raise TypeError(
            f"blocks must be a mapping {{name: module or parameters}}, got {type(blocks).__name__}"
        )
    if not blocks:
        raise ValueError("blocks is empty: give at least one {name: parameters} entry")
    owner: dict[int, tuple[str, str]] = {}
    result: list[Block] = []
    for block, spec in blocks.items():
        if not isinstance(block, str):
            raise TypeError(f"block names must be strings, got {block!r}")
        params: list[torch.Tensor] = []
        names: list[str] = []
        frozen: list[str] = []
        seen: set[int] = set()
        for index, (given, p) in enumerate(_entries(block, spec)):
            name = given if given is not None else f"#{index}"
            p = _check_tensor(block, p, name)
            if id(p) in seen:
                continue
            if id(p) in owner:
                other, other_name = owner[id(p)]
                raise ValueError(
                    f"{_describe(p, name)} of block {block!r} is also parameter "
                    f"{other_name!r} of block {other!r}: blocks must not overlap"
                )
            seen.add(id(p))
            owner[id(p)] = (block, name)
            if not p.requires_grad:
                frozen.append(name)
                continue
            params.append(p)
            names.append(name)
        if not params:
            why = f" (all {len(frozen)} are frozen: requires_grad=False)" if frozen else ""
            raise ValueError(f"block {block!r} has no trainable parameters{why}")
        first = params[0]
        for p, name in zip(params[1:], names[1:]):
            if p.dtype != first.dtype or p.device != first.device:
                raise ValueError(
                    f"block {block!r} mixes dtypes or devices: {_describe(first, names[0])} vs "
                    f"{_describe(p, name)}; split it into blocks of one dtype and device"
                )
        result.append(Block(block, tuple(params), tuple(names), tuple(frozen)))
    return tuple(result)
