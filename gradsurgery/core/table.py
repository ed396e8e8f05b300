"""The gradient table: per block, the ``(k, P)`` matrix of its objectives' gradients."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

import torch

from .blocks import Block
from .gramian import GramianPolicy, combine, compute_gramian

__all__ = ["BlockGradients", "GradientTable", "RowSource", "Writer"]


class RowSource(Protocol):
    """What an engine that does not keep a block's ``(k, P)`` rows provides instead.

    The memory-light engines decide on the Gramian and form the update without ever
    holding every objective's gradient of the block at once.
    """

    def gramian(self) -> torch.Tensor:
        """The ``(k, k)`` Gramian of the rows (float64 on the CPU unless told otherwise)."""
        ...

    def combine(self, weights: torch.Tensor) -> torch.Tensor:
        """``Σ_i w_i g_i`` as a ``(P,)`` tensor in the block's dtype and device."""
        ...

    def finite(self) -> torch.Tensor:
        """A 0-d boolean tensor: whether every row is finite."""
        ...


Writer = Callable[[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]]
"""Maps a block's ``(P,)`` update to ``(leaf, gradient)`` pairs to accumulate."""


class BlockGradients:
    """The gradients of every objective with respect to one block.

    Args:
        name: The block's name.
        matrix: ``(k, P)`` tensor; row ``i`` is objective ``i``'s gradient flattened over the
            block's parameters (zeros where the objective does not reach a parameter); or
            ``None`` when an engine keeps only a `RowSource`.
        shapes: The shapes of the block's parameters, in flattening order.
        reached: Per objective, whether it reaches any parameter of the block.
        block: The parameters the rows belong to (``None`` for a table built from plain
            matrices, which has nothing to write into).
        param_reached: Per parameter, whether any objective reaches it.
        bypass: A ``(P,)`` gradient added to the block's update unchanged (from the
            ``extra`` losses of `gradsurgery.gradient_table`), or ``None``.
        policy: Where and in which dtype the Gramian is kept.
        source: The rows' stand-in when ``matrix`` is ``None``.
        writer: How an update becomes parameter gradients, when it is not a flat vector
            over the parameters (e.g. a gradient with respect to the block's output, sent
            back through it); by default the update is split over the reached parameters.
        numel: ``P``, when there is no matrix to read it from.
    """

    def __init__(
        self,
        name: str,
        matrix: torch.Tensor | None,
        shapes: tuple[torch.Size, ...],
        reached: tuple[bool, ...],
        *,
        block: Block | None = None,
        param_reached: tuple[bool, ...] = (),
        bypass: torch.Tensor | None = None,
        policy: GramianPolicy | None = None,
        source: RowSource | None = None,
        writer: Writer | None = None,
        numel: int | None = None,
    ) -> None:
        if matrix is None and source is None:
            raise ValueError(f"block {name!r}: give the rows (matrix) or a row source")
        self.name = name
        self._matrix = matrix
        self.shapes = shapes
        self.reached = reached
        self.block = block
        self.param_reached = param_reached or (True,) * len(shapes)
        self.bypass = bypass
        self.policy = policy or GramianPolicy()
        self.source = source
        self.writer = writer
        self._numel = numel
        self._gramian: torch.Tensor | None = None
        self._gramian_of_rows = False

    @property
    def matrix(self) -> torch.Tensor:
        """The ``(k, P)`` rows.

        Raises:
            ValueError: If the engine that built the table keeps no rows (memory-light
                engines); methods that read rows declare ``needs_rows``.
        """
        if self._matrix is None:
            raise ValueError(
                f"block {self.name!r}: the engine that built this table keeps no gradient rows "
                "(only their Gramian); use a method that does not read rows, or engine='table'"
            )
        return self._matrix

    @property
    def has_rows(self) -> bool:
        """Whether the ``(k, P)`` rows are held."""
        return self._matrix is not None

    @property
    def k(self) -> int:
        """The number of objectives."""
        return len(self.reached)

    @property
    def numel(self) -> int:
        """``P``, the length of the block's update."""
        if self._matrix is not None:
            return int(self._matrix.shape[1])
        if self._numel is not None:
            return self._numel
        return sum(int(torch.Size(s).numel()) for s in self.shapes)

    @property
    def gramian(self) -> torch.Tensor:
        """``G Gᵀ``, computed once on first use (placed by `policy`) and shared."""
        if self._gramian is None:
            if self._matrix is not None:
                self._gramian = compute_gramian(self._matrix, self.policy)
                self._gramian_of_rows = True
            else:
                assert self.source is not None
                self._gramian = self.source.gramian()
        return self._gramian

    @property
    def decision_device(self) -> torch.device:
        """Where decisions on this block run: the host, or — under a ``"native"`` Gramian
        policy — the device of the rows (or of the Gramian, when no rows are kept)."""
        if self.policy.device == "cpu":
            return torch.device("cpu")
        if self._matrix is not None:
            return self._matrix.device
        return self.gramian.device

    @property
    def has_gramian(self) -> bool:
        """Whether the Gramian has been computed (or given) already."""
        return self._gramian is not None

    def set_gramian(self, gramian: torch.Tensor) -> None:
        """Replace the Gramian, e.g. by one summed over processes or over shards."""
        k = self.k
        if gramian.shape != (k, k):
            raise ValueError(
                f"block {self.name!r}: expected a ({k}, {k}) Gramian, got {tuple(gramian.shape)}"
            )
        self._gramian = gramian
        self._gramian_of_rows = False

    def combine(self, weights: torch.Tensor) -> torch.Tensor:
        """The weighted sum of the rows ``Σ_i w_i g_i``, a ``(P,)`` tensor."""
        if self._matrix is not None:
            return combine(weights, self._matrix)
        assert self.source is not None
        return self.source.combine(weights)

    def finite(self) -> torch.Tensor:
        """A 0-d boolean tensor: whether every row is finite (no host synchronisation).

        Once the Gramian of the rows has been computed here, it answers: a NaN or infinite
        entry makes its row's squared norm non-finite, and finite rows always give a finite
        Gramian (rows whose squares overflow are rescaled, or raise), so no further pass
        over the rows is needed.
        """
        if self._gramian is not None and self._gramian_of_rows:
            return torch.isfinite(self._gramian).all()
        if self._matrix is not None:
            # The extremes are finite iff every entry is (NaN propagates through aminmax);
            # measured several times faster than isfinite().all() on large rows.
            low, high = torch.aminmax(self._matrix)
            return torch.isfinite(low) & torch.isfinite(high)
        assert self.source is not None
        return self.source.finite()

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

    def param_grads(self, update: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(parameter, gradient)`` pairs to accumulate for an update of this block.

        The bypass gradient (extra losses) is added; parameters no objective reaches are left
        out.

        Raises:
            ValueError: If the block has no parameters (a table from plain matrices) or the
                update has the wrong shape.
        """
        if self.block is None:
            raise ValueError(
                f"block {self.name!r} was built from a plain matrix and has no parameters to "
                "write into; build the table with gradsurgery.gradient_table"
            )
        if update.shape != (self.numel,):
            raise ValueError(
                f"block {self.name!r}: expected an update of shape ({self.numel},), "
                f"got {tuple(update.shape)}"
            )
        if self.writer is not None:
            pairs = self.writer(update.detach())
        else:
            views = self.split(update.detach())
            pairs = [
                (p, v) for p, v, hit in zip(self.block.params, views, self.param_reached) if hit
            ]
        if self.bypass is None:
            return pairs
        extra = dict(zip(map(id, self.block.params), self.split(self.bypass)))
        return [(p, g + extra[id(p)]) for p, g in pairs]

    def __repr__(self) -> str:
        return f"BlockGradients(name={self.name!r}, k={self.k}, P={self.numel})"


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
            shape = tuple(block.matrix.shape) if block.has_rows else (block.k,)
            if len(shape) != (2 if block.has_rows else 1) or shape[0] != len(self.objectives):
                raise ValueError(
                    f"block {block.name!r}: expected a ({len(self.objectives)}, P) matrix for "
                    f"objectives {self.objectives}, got shape {shape}"
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
    def from_passes(
        cls,
        losses: Mapping[str, torch.Tensor],
        blocks: Sequence[BlockGradients],
        *,
        outside: Iterable[tuple[torch.Tensor, torch.Tensor | None]],
        engine: str,
    ) -> GradientTable:
        """The table an engine assembles after its backward passes.

        Args:
            losses: The objectives by name (row order), as scalar losses; their detached
                values are kept.
            blocks: The blocks' gradients.
            outside: ``(leaf, gradient)`` for the leaves outside the blocks; leaves without
                a gradient (``None``) are left out.
            engine: The engine's name.
        """
        values = torch.stack([loss.detach().reshape(()).float() for loss in losses.values()])
        return cls(
            list(losses),
            blocks,
            losses=values,
            outside=[(t, g) for t, g in outside if g is not None],
            engine=engine,
        )

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
                    name,
                    m.detach(),
                    (torch.Size([m.shape[1]]),),
                    (True,) * m.shape[0],
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

    @property
    def decision_device(self) -> torch.device:
        """Where a decision over the whole table runs: its first block's
        `BlockGradients.decision_device`."""
        return next(iter(self.blocks.values())).decision_device

    @property
    def synchronous(self) -> bool:
        """Whether decisions on this table may read values on the host: False when every
        block's Gramian policy avoids host synchronisation (a step with ``sync=False``)."""
        return any(b.policy.synchronizes for b in self.blocks.values())

    def finite(self) -> bool:
        """Whether every gradient row is finite (one host synchronisation for the table)."""
        flags = [b.finite() for b in self.blocks.values()]
        return bool(torch.stack([f.cpu() for f in flags]).all())

    def nonfinite_rows(self) -> dict[str, list[str]]:
        """``{block: [objective, ...]}`` of the rows holding NaN or Inf (the slow path)."""
        out: dict[str, list[str]] = {}
        for name, block in self.blocks.items():
            if not block.has_rows:
                if not bool(block.finite()):
                    out[name] = list(self.objectives)  # which rows: unknown without them
                continue
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
        shapes = ", ".join(f"{n}: ({b.k}, {b.numel})" for n, b in self.blocks.items())
        return f"GradientTable(objectives={list(self.objectives)}, blocks={{{shapes}}})"
