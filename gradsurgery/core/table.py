"""The gradient table: per block, the ``(k, P)`` matrix of its objectives' gradients."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from .blocks import Block
from .gramian import GramianPolicy, compute_gramian

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
        block: The parameters the rows belong to (``None`` for a table built from plain
            matrices, which has nothing to write into).
        param_reached: Per parameter, whether any objective reaches it.
        bypass: A ``(P,)`` gradient added to the block's update unchanged (from the
            ``extra`` losses of `gradsurgery.gradient_table`), or ``None``.
        policy: Where and in which dtype the Gramian is kept.
    """

    name: str
    matrix: torch.Tensor
    shapes: tuple[torch.Size, ...]
    reached: tuple[bool, ...]
    block: Block | None = None
    param_reached: tuple[bool, ...] = ()
    bypass: torch.Tensor | None = None
    policy: GramianPolicy = field(default_factory=GramianPolicy)
    _gramian: torch.Tensor | None = field(default=None, repr=False)

    @property
    def gramian(self) -> torch.Tensor:
        """``G Gᵀ``, computed once on first use (placed by `policy`) and shared."""
        if self._gramian is None:
            self._gramian = compute_gramian(self.matrix, self.policy)
        return self._gramian

    @property
    def has_gramian(self) -> bool:
        """Whether the Gramian has been computed (or given) already."""
        return self._gramian is not None

    def set_gramian(self, gramian: torch.Tensor) -> None:
        """Replace the Gramian, e.g. by one summed over processes or over shards."""
        k = self.matrix.shape[0]
        if gramian.shape != (k, k):
            raise ValueError(
                f"block {self.name!r}: expected a ({k}, {k}) Gramian, got {tuple(gramian.shape)}"
            )
        self._gramian = gramian

    @property
    def param_names(self) -> tuple[str, ...]:
        """Names of the block's parameters (``#i`` for plain matrices)."""
        if self.block is not None:
            return self.block.param_names
        return tuple(f"#{i}" for i in range(len(self.shapes)))

    def split(self, vector: torch.Tensor) -> list[torch.Tensor]:
        """Split a ``(P,)`` vector into views shaped like the block's parameters."""
        sizes = [int(torch.Size(s).numel()) for s in self.shapes]
        return [part.view(shape) for part, shape in zip(torch.split(vector, sizes), self.shapes)]


class GradientTable:
    """Each block's per-objective gradients, with their Gramians on demand.

    Build one with `from_matrices` (plain tensors) or with `gradsurgery.gradient_table`
    (from losses).

    Args:
        objectives: Objective names, in row order.
        blocks: The blocks' gradients, in block order.
        losses: The objectives' loss values, detached, shape ``(k,)``, for methods that read
            them (`gradsurgery.Method.needs_losses`); ``None`` if unknown.
        outside: ``(parameter, gradient)`` pairs for the leaves outside the blocks: the
            plain gradient of ``Σ_i L_i`` (plus any extra losses), written unchanged.
        engine: The name of the engine that built the table (``None`` for plain matrices).
    """

    def __init__(
        self,
        objectives: Sequence[str],
        blocks: Sequence[BlockGradients],
        *,
        losses: torch.Tensor | None = None,
        outside: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
        engine: str | None = None,
    ) -> None:
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
        if not self.blocks:
            raise ValueError("a gradient table needs at least one block")
        if losses is not None:
            losses = losses.detach().reshape(-1)
            if losses.shape != (len(self.objectives),):
                raise ValueError(
                    f"expected {len(self.objectives)} loss values for objectives "
                    f"{list(self.objectives)}, got shape {tuple(losses.shape)}"
                )
        self.losses: torch.Tensor | None = losses
        self.outside: list[tuple[torch.Tensor, torch.Tensor]] = list(outside)
        self.engine = engine

    @classmethod
    def from_matrices(
        cls,
        matrices: Mapping[str, torch.Tensor],
        objectives: Sequence[str] | None = None,
        *,
        losses: torch.Tensor | Sequence[float] | None = None,
        policy: GramianPolicy | None = None,
    ) -> GradientTable:
        """Build a table from ``{block: (k, P) tensor}``.

        Every row given this way counts as reaching its block (no scan over the entries).

        Args:
            matrices: One ``(k, P)`` tensor per block (a ``(P,)`` tensor counts as ``k = 1``).
            objectives: Row names; defaults to ``"0", "1", ...``.
            losses: The objectives' loss values, for methods that read them.
            policy: Where and in which dtype Gramians are kept.
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
                    param_reached=(True,),
                    policy=policy or GramianPolicy(),
                )
            )
        k = items[0].matrix.shape[0]
        names = tuple(objectives) if objectives is not None else tuple(str(i) for i in range(k))
        values = None
        if losses is not None:
            values = torch.as_tensor(losses, dtype=torch.float64)
        return cls(names, items, losses=values)

    @property
    def k(self) -> int:
        """The number of objectives."""
        return len(self.objectives)

    def finite(self) -> bool:
        """Whether every gradient row is finite (one host synchronisation for the table)."""
        flags = [torch.isfinite(b.matrix).all() for b in self.blocks.values()]
        return bool(torch.stack([f.cpu() for f in flags]).all())

    def nonfinite_rows(self) -> dict[str, list[str]]:
        """``{block: [objective, ...]}`` of the rows holding NaN or Inf (the slow path)."""
        out: dict[str, list[str]] = {}
        for name, block in self.blocks.items():
            bad = (~torch.isfinite(block.matrix)).any(dim=1).cpu().tolist()
            rows = [o for o, b in zip(self.objectives, bad) if b]
            if rows:
                out[name] = rows
        return out

    def index(self, objective: str) -> int:
        """Row index of an objective; raises ``KeyError`` naming the known ones."""
        try:
            return self.objectives.index(objective)
        except ValueError:
            raise KeyError(
                f"unknown objective {objective!r}; the table has {list(self.objectives)}"
            ) from None

    def loss(self, objective: str) -> float:
        """One objective's loss value.

        Raises:
            ValueError: If the table carries no loss values.
        """
        if self.losses is None:
            raise ValueError("this gradient table carries no loss values")
        return float(self.losses[self.index(objective)])

    def __getitem__(self, block: str) -> BlockGradients:
        try:
            return self.blocks[block]
        except KeyError:
            raise KeyError(f"unknown block {block!r}; the table has {list(self.blocks)}") from None

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n}: {tuple(b.matrix.shape)}" for n, b in self.blocks.items())
        return f"GradientTable(objectives={list(self.objectives)}, blocks={{{shapes}}})"
