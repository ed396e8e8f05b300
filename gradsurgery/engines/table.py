"""The table engine: one ``torch.autograd.grad`` pass per objective, rows stored whole.

Exact for any model. It costs k backward passes and holds the ``(k, P)`` table; only one
objective's raw gradients are alive at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..core.blocks import Block
from ..core.gramian import GramianPolicy
from ..core.table import BlockGradients, GradientTable
from .graph import reached_leaves

__all__ = ["TableEngine"]


def _sparse_error(block: Block, index: int) -> ValueError:
    return ValueError(
        f"block {block.name!r}: parameter {block.param_names[index]!r} received a sparse "
        "gradient (e.g. nn.Embedding(sparse=True)); gradient surgery needs dense gradients: "
        "use sparse=False or leave the parameter out of the blocks"
    )


class TableEngine:
    """Build the full gradient table with one backward pass per objective."""

    name = "table"

    def build(
        self,
        losses: Mapping[str, torch.Tensor],
        blocks: Sequence[Block],
        *,
        extra: Sequence[torch.Tensor] = (),
        policy: GramianPolicy,
        retain_graph: bool = False,
    ) -> GradientTable:
        """Back-propagate each objective separately and gather the rows.

        Args:
            losses: Objective names mapped to scalar losses (already validated).
            blocks: The blocks (already validated).
            extra: Scalar losses outside the surgery: their plain gradient goes to every
                leaf they reach (to block parameters through `BlockGradients.bypass`).
            policy: The Gramian policy of the table's blocks.
            retain_graph: Keep the graph after the last pass.

        Returns:
            The table, with the loss values and the plain gradients of the leaves outside
            the blocks.
        """
        names = list(losses)
        params = [p for b in blocks for p in b.params]
        owner = [(b, i) for b in blocks for i in range(len(b.params))]
        ids = {id(p) for p in params}
        roots = [*losses.values(), *extra]
        others = [t for t in reached_leaves(roots) if id(t) not in ids]
        inputs = params + others
        n = len(params)
        k = len(names)
        matrices = [torch.zeros(k, b.numel, dtype=b.dtype, device=b.device) for b in blocks]
        offsets = [[0] * len(b.params) for b in blocks]
        for b, block in enumerate(blocks):
            start = 0
            for j, p in enumerate(block.params):
                offsets[b][j] = start
                start += p.numel()
        reached = [[False] * k for _ in blocks]
        param_reached = [[False] * len(b.params) for b in blocks]
        outside: list[torch.Tensor | None] = [None] * len(others)
        position = {id(b): i for i, b in enumerate(blocks)}

        def backprop(root: torch.Tensor, keep: bool) -> tuple[torch.Tensor | None, ...]:
            return torch.autograd.grad(
                root, inputs, retain_graph=keep, allow_unused=True, materialize_grads=False
            )

        for i, name in enumerate(names):
            keep = retain_graph or i < k - 1 or bool(extra)
            grads = backprop(losses[name], keep)
            if all(g is None for g in grads[:n]):
                raise ValueError(
                    f"objective {name!r} does not depend on any block parameter "
                    f"(blocks: {[b.name for b in blocks]}); pass a loss that reaches no block "
                    "through extra= instead"
                )
            for g, (block, j) in zip(grads[:n], owner):
                if g is None:
                    continue
                if g.layout != torch.strided:
                    raise _sparse_error(block, j)
                b = position[id(block)]
                start = offsets[b][j]
                matrices[b][i, start : start + g.numel()] = g.reshape(-1)
                reached[b][i] = True
                param_reached[b][j] = True
            for j, g in enumerate(grads[n:]):
                if g is not None:
                    prev = outside[j]
                    outside[j] = g if prev is None else prev + g
            del grads
        bypass: list[torch.Tensor | None] = [None] * len(blocks)
        if extra:
            total = extra[0] if len(extra) == 1 else torch.stack(list(extra)).sum()
            grads = backprop(total, retain_graph)
            for g, (block, j) in zip(grads[:n], owner):
                if g is None:
                    continue
                if g.layout != torch.strided:
                    raise _sparse_error(block, j)
                b = position[id(block)]
                if bypass[b] is None:
                    bypass[b] = torch.zeros(block.numel, dtype=block.dtype, device=block.device)
                start = offsets[b][j]
                bypass[b][start : start + g.numel()] = g.reshape(-1)  # type: ignore[index]
            for j, g in enumerate(grads[n:]):
                if g is not None:
                    prev = outside[j]
                    outside[j] = g if prev is None else prev + g
        return GradientTable.from_passes(
            losses,
            [
                BlockGradients(
                    block.name,
                    matrices[b],
                    tuple(p.shape for p in block.params),
                    tuple(reached[b]),
                    block=block,
                    param_reached=tuple(param_reached[b]),
                    bypass=bypass[b],
                    policy=policy,
                )
                for b, block in enumerate(blocks)
            ],
            outside=zip(others, outside),
            engine=self.name,
        )
