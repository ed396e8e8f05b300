"""Blocks: named, disjoint sets of parameters that a method updates as one unit."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

__all__ = ["Block", "make_blocks"]


@dataclass(frozen=True)
class Block:
    """A named set of parameters, flattened in a fixed order.

    Attributes:
        name: The block's name, e.g. ``"video"`` or ``"trunk"``.
        params: The block's parameters in the order their gradients are flattened.
    """

    name: str
    params: tuple[torch.Tensor, ...]

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


def _describe(p: torch.Tensor, index: int) -> str:
    return f"parameter #{index} (shape {tuple(p.shape)}, dtype {p.dtype}, device {p.device})"


def make_blocks(blocks: Mapping[str, Iterable[torch.Tensor]]) -> tuple[Block, ...]:
    """Validate a ``{name: parameters}`` mapping and turn it into blocks.

    Args:
        blocks: Block names mapped to iterables of parameters (``module.parameters()``, a
            list of tensors, ...). A parameter listed twice in one block is kept once.

    Returns:
        The blocks, in the mapping's order.

    Raises:
        ValueError: If there are no blocks, a block is empty, a parameter belongs to two
            blocks, or a block mixes dtypes or devices.
        TypeError: If a block name is not a string or an entry is not a tensor.
    """
    if isinstance(blocks, torch.Tensor) or not isinstance(blocks, Mapping):
        raise TypeError(
            "blocks must be a mapping {name: iterable of parameters}, "
            f"got {type(blocks).__name__}"
        )
    if not blocks:
        raise ValueError("blocks is empty: give at least one {name: parameters} entry")
    owner: dict[int, tuple[str, int]] = {}
    result: list[Block] = []
    for name, params in blocks.items():
        if not isinstance(name, str):
            raise TypeError(f"block names must be strings, got {name!r}")
        if isinstance(params, torch.Tensor):
            params = [params]
        unique: list[torch.Tensor] = []
        seen: set[int] = set()
        for index, p in enumerate(params):
            if not isinstance(p, torch.Tensor):
                raise TypeError(
                    f"block {name!r}: entry #{index} is a {type(p).__name__}, not a tensor"
                )
            if id(p) in seen:
                continue
            if id(p) in owner:
                other, other_index = owner[id(p)]
                raise ValueError(
                    f"{_describe(p, index)} of block {name!r} is also parameter "
                    f"#{other_index} of block {other!r}: blocks must not overlap"
                )
            if not p.requires_grad:
                raise ValueError(f"block {name!r}: {_describe(p, index)} does not require grad")
            if p.is_sparse:
                raise ValueError(f"block {name!r}: {_describe(p, index)} is sparse")
            seen.add(id(p))
            owner[id(p)] = (name, index)
            unique.append(p)
        if not unique:
            raise ValueError(f"block {name!r} has no parameters")
        first = unique[0]
        for index, p in enumerate(unique[1:], start=1):
            if p.dtype != first.dtype or p.device != first.device:
                raise ValueError(
                    f"block {name!r} mixes dtypes or devices: {_describe(first, 0)} vs "
                    f"{_describe(p, index)}; split it into blocks of one dtype and device"
                )
        result.append(Block(name, tuple(unique)))
    return tuple(result)
