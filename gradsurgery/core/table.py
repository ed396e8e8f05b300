"""The gradient table: per block, the ``(k, P)`` matrix of its objectives' gradients."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from .blocks import Block
from .gramian import compute_gramian

__all__ = ["BlockGradients", "GradientTable"]


@dataclass(eq=False)
class BlockGradients:
    """The gradients of every objective with respect to one block.

    Attributes:
        name: The block's name.
        matrix: ``(k, P)`` tensor; row ``i`` is objective ``i``'s gradient flattened over the
            block's parameters (zeros where the objective does not reach a parameter).
        shapes: The shapes of the block's parameters, in flattening order.
        reached: Per objective, whether it reaches any parameter of the block.
    """

    name: str
    matrix: torch.Tensor
    shapes: tuple[torch.Size, ...]
    reached: tuple[bool, ...]
    _gramian: torch.Tensor | None = field(default=None, repr=False)

    @property
    def gramian(self) -> torch.Tensor:
        """``G Gᵀ`` as a float64 CPU tensor, computed once on first use and shared."""
        if self._gramian is None:
            self._gramian = compute_gramian(self.matrix)
        return self._gramian

    def split(self, vector: torch.Tensor) -> list[torch.Tensor]:
        """Split a ``(P,)`` vector into views shaped like the block's parameters."""
        sizes = [int(torch.Size(s).numel()) for s in self.shapes]
        return [part.view(shape) for part, shape in zip(torch.split(vector, sizes), self.shapes)]


class GradientTable:
    """Each block's per-objective gradients, with their Gramians on demand.

    Build one with `from_matrices` (plain tensors) or let `gradsurgery.backward`
    build it from losses.

    Args:
        objectives: Objective names, in row order.
        blocks: The blocks' gradients, in block order.
    """

    def __init__(self, objectives: Sequence[str], blocks: Sequence[BlockGradients]) -> None:
        self.objectives: tuple[str, ...] = tuple(objectives)
        if len(set(self.objectives)) != len(self.objectives):
            raise ValueError(f"objective names must be unique, got {self.objectives}")
        if not self.objectives:
            raise ValueError("a gradient table needs at least one objective")
        self.blocks: dict[str, BlockGradients] = {}
        for block in blocks:
            k = block.matrix.shape[0] if block.matrix.dim() == 2 else -1
            if k != len(self.objectives):
                raise ValueError(
                    f"block {block.name!r}: expected a ({len(self.objectives)}, P) matrix for "
                    f"objectives {self.objectives}, got shape {tuple(block.matrix.shape)}"
                )
            if block.name in self.blocks:
                raise ValueError(f"block {block.name!r} appears twice")
            self.blocks[block.name] = block

    @classmethod
    def from_matrices(
        cls,
        matrices: Mapping[str, torch.Tensor],
        objectives: Sequence[str] | None = None,
    ) -> GradientTable:
        """Build a table from ``{block: (k, P) tensor}``.

        Every row given this way counts as reaching its block (no scan over the entries).

        Args:
            matrices: One ``(k, P)`` tensor per block (a ``(P,)`` tensor counts as ``k = 1``).
            objectives: Row names; defaults to ``"0", "1", ...``.
        """
        if not matrices:
            raise ValueError("matrices is empty: give at least one block")
        items = []
        for name, m in matrices.items():
            if not isinstance(m, torch.Tensor):
                raise TypeError(f"block {name!r}: expected a tensor, got {type(m).__name__}")
            if m.dim() == 1:
                m = m[None]
            if m.dim() != 2:
                raise ValueError(
                    f"block {name!r}: expected a (k, P) matrix, got shape {tuple(m.shape)}"
                )
            if not m.is_floating_point():
                raise TypeError(f"block {name!r}: expected a floating matrix, got {m.dtype}")
            items.append(
                BlockGradients(
                    name=name,
                    matrix=m.detach(),
                    shapes=(torch.Size([m.shape[1]]),),
                    reached=(True,) * m.shape[0],
                )
            )
        k = items[0].matrix.shape[0]
        names = tuple(objectives) if objectives is not None else tuple(str(i) for i in range(k))
        return cls(names, items)

    @classmethod
    def from_grads(
        cls,
        objectives: Sequence[str],
        blocks: Sequence[Block],
        grads: Iterable[Sequence[torch.Tensor | None]],
    ) -> GradientTable:
        """Build a table from per-objective gradient lists, one objective at a time.

        Args:
            objectives: Objective names.
            blocks: The blocks.
            grads: Yields, for each objective in order, its gradients for every parameter of
                every block (block order, then parameter order); ``None`` means "not
                reached". A generator keeps only one objective's gradients alive at a time.
        """
        matrices = [
            torch.zeros(len(objectives), b.numel, dtype=b.dtype, device=b.device) for b in blocks
        ]
        reached = [[False] * len(objectives) for _ in blocks]
        rows = 0
        for i, row in enumerate(grads):
            if i >= len(objectives):
                raise ValueError(f"more gradient rows than objectives {list(objectives)}")
            flat = iter(row)
            for b, block in enumerate(blocks):
                start = 0
                for p in block.params:
                    g = next(flat)
                    size = p.numel()
                    if g is not None:
                        matrices[b][i, start : start + size] = g.reshape(-1)
                        reached[b][i] = True
                    start += size
            rows += 1
        if rows != len(objectives):
            raise ValueError(f"got {rows} gradient rows for objectives {list(objectives)}")
        return cls(
            objectives,
            [
                BlockGradients(
                    name=block.name,
                    matrix=matrix,
                    shapes=tuple(p.shape for p in block.params),
                    reached=tuple(hit),
                )
                for block, matrix, hit in zip(blocks, matrices, reached)
            ],
        )

    def index(self, objective: str) -> int:
        """Row index of an objective; raises ``KeyError`` naming the known ones."""
        try:
            return self.objectives.index(objective)
        except ValueError:
            raise KeyError(
                f"unknown objective {objective!r}; the table has {list(self.objectives)}"
            ) from None

    def __getitem__(self, block: str) -> BlockGradients:
        try:
            return self.blocks[block]
        except KeyError:
            raise KeyError(f"unknown block {block!r}; the table has {list(self.blocks)}") from None

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n}: {tuple(b.matrix.shape)}" for n, b in self.blocks.items())
        return f"GradientTable(objectives={list(self.objectives)}, blocks={{{shapes}}})"
