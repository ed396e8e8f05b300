r"""The representation engine: decide on the gradients of each block's output.

Each block ``b`` is given with its output tensor ``Z_b`` (the shared representation, e.g. a
trunk's features). The table's rows for the block are the objectives' gradients with
respect to ``Z_b``, flattened over the batch:

$$ r_i = \partial L_i / \partial Z_b \in \mathbb{R}^{B \cdot D}, $$

one ``torch.autograd.grad`` per objective that stops at the features (it runs the heads'
backward only). The method decides on those rows (their ``k x k`` Gramian), and the
block's parameters then receive **one** backward pass of the decided output gradient
``u = Σ_i w_i r_i``: ``J_bᵀ u`` where ``J_b = ∂Z_b/∂θ_b``. Total cost: the heads' backward
``k`` times plus one ordinary backward through the block, about the cost of
``sum(losses).backward()``.

**What it approximates (and why that is reasonable).** The exact method decides on the
parameter gradients ``g_i = J_bᵀ r_i``, whose Gramian is ``R J_b J_bᵀ Rᵀ``; this engine
decides on ``R Rᵀ``. The update is linear in the rows, so ``Σ_i w_i g_i = J_bᵀ Σ_i w_i r_i``
holds for any weights: only the *weights* differ. Sener & Koltun (NeurIPS 2018, "Multi-Task
Learning as Multi-Objective Optimization", MGDA-UB) use
``‖Σ_i w_i g_i‖ ≤ ‖J_b‖ ‖Σ_i w_i r_i‖``: minimizing the right-hand side over the simplex
needs only ``R Rᵀ``, and when ``J_b`` has full rank the solution is still either Pareto
stationary or a common descent direction. The argument is specific to min-norm weightings
(MGDA); it gives no guarantee for projections (PCGrad, UPGrad), constrained directions
(CAGrad) or any other decision, which see conflicts in the output space: ``r_i·r_j < 0`` and
``g_i·g_j < 0`` need not agree, because ``J_b J_bᵀ`` mixes the samples of the batch.

**Exact cases.** The weights equal the exact method's whenever ``J_b J_bᵀ = c·I`` on the
rows' span and the method's weights are invariant to a positive scaling of the Gramian
(PCGrad, CAGrad, MGDA, the plain sum): e.g. a block that is one ``nn.Linear`` seeing a
batch of one (``J Jᵀ = (‖a‖² + 1) I``), or a bias-free ``nn.Linear`` whose batch inputs are
orthogonal with equal norms. ``Sum`` (all weights 1) is exact for every block.

**Requirements.** Every block parameter must reach the losses only through its block's
features (checked: an error names the parameter otherwise). Parameters outside the blocks
get the plain gradient of ``Σ_i L_i`` as with the other engines. The graph is kept after
the objectives' passes for the blocks' backward, and freed by the last block written
(unless ``retain_graph``). Not for data parallelism: the rows are per-sample gradients of
this process's batch, which averaging across ranks would mix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch.autograd.graph import Node

from ..core.blocks import Block
from ..core.gramian import GramianPolicy
from ..core.table import BlockGradients, GradientTable, Writer
from .graph import reached_leaves

__all__ = ["Features", "RepresentationEngine"]

Features = Mapping[str, torch.Tensor | Sequence[torch.Tensor]]
"""Block names mapped to the block's output tensor (or several output tensors)."""

_Edge = tuple[Node, int]


def _leaves_below(
    starts: Sequence[Node], stop: set[_Edge]
) -> tuple[set[int], dict[int, torch.Tensor]]:
    """The nodes' ids and leaf tensors reached from ``starts``, not crossing ``stop`` edges."""
    seen: set[Node] = set()
    leaves: dict[int, torch.Tensor] = {}
    stack = list(starts)
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if isinstance(variable, torch.Tensor):
            leaves[id(variable)] = variable
        for child, nr in node.next_functions:
            if child is not None and (child, nr) not in stop:
                stack.append(child)
    return {id(n) for n in seen}, leaves


class _Release:
    """Counts the blocks written: the last one frees the graph (unless it is retained)."""

    def __init__(self, total: int, retain: bool) -> None:
        self.left = total
        self.retain = retain

    def keep(self) -> bool:
        self.left -= 1
        return self.retain or self.left > 0


class RepresentationEngine:
    """Build a table of output gradients, one row per objective for each block's features.

    See the module documentation for what is exact and what is approximated.

    Args:
        features: Block names mapped to the block's output tensor(s) from this step's
            forward pass. Give a new engine (or set `features`) every step.
    """

    name = "representation"

    def __init__(self, features: Features | None = None) -> None:
        self.features = features

    def __repr__(self) -> str:
        keys = None if self.features is None else sorted(self.features)
        return f"RepresentationEngine(features={keys})"

    def _outputs(self, blocks: Sequence[Block]) -> list[list[torch.Tensor]]:
        if self.features is None:
            raise ValueError(
                "engine 'representation' needs each block's output tensor: pass "
                "RepresentationEngine(features={block: output}) as the engine"
            )
        if not isinstance(self.features, Mapping):
            raise TypeError(
                f"features must map block names to tensors, got {type(self.features).__name__}"
            )
        names = [b.name for b in blocks]
        missing = [n for n in names if n not in self.features]
        unknown = [n for n in self.features if n not in names]
        if missing or unknown:
            raise ValueError(
                f"features must name every block exactly: missing {missing}, unknown {unknown} "
                f"(blocks: {names})"
            )
        out = []
        for block in blocks:
            given = self.features[block.name]
            tensors = [given] if isinstance(given, torch.Tensor) else list(given)
            if not tensors:
                raise ValueError(f"block {block.name!r}: features is empty")
            for t in tensors:
                if not isinstance(t, torch.Tensor):
                    raise TypeError(
                        f"block {block.name!r}: features must be tensors, got {type(t).__name__}"
                    )
                if not t.is_floating_point():
                    raise ValueError(
                        f"block {block.name!r}: features must be floating, got {t.dtype}"
                    )
                if t.grad_fn is None:
                    raise ValueError(
                        f"block {block.name!r}: its features do not come from its parameters "
                        "(no grad_fn: a leaf, or computed under torch.no_grad()); give the "
                        "block's output from this step's forward pass"
                    )
            if len({t.dtype for t in tensors}) > 1:
                raise ValueError(f"block {block.name!r}: features mix dtypes")
            out.append(tensors)
        return out

    def build(
        self,
        losses: Mapping[str, torch.Tensor],
        blocks: Sequence[Block],
        *,
        extra: Sequence[torch.Tensor] = (),
        policy: GramianPolicy,
        retain_graph: bool = False,
    ) -> GradientTable:
        """Back-propagate each objective to the features; keep the graph for the blocks.

        Args:
            losses: Objective names mapped to scalar losses (already validated).
            blocks: The blocks (already validated).
            extra: Scalar losses outside the surgery (plain gradient everywhere they reach).
            policy: The Gramian policy of the table's blocks.
            retain_graph: Keep the graph after the last block is written.

        Returns:
            A table whose rows are output gradients; writing it runs one backward pass per
            block (`gradsurgery.BlockGradients.writer`).

        Raises:
            ValueError: Missing or unusable features, a block parameter that reaches the
                losses other than through its features, or an objective that reaches no
                feature.
        """
        outputs = self._outputs(blocks)
        names = list(losses)
        k = len(names)
        roots = list(losses.values())
        stop: set[_Edge] = set()
        for tensors in outputs:
            for t in tensors:
                assert t.grad_fn is not None
                stop.add((t.grad_fn, t.output_nr))
        starts = [t.grad_fn for t in roots if t.grad_fn is not None]
        _, above = _leaves_below(starts, stop)
        owner = {id(p): (b, n) for b in blocks for p, n in zip(b.params, b.param_names)}
        leaked = [owner[i] for i in above if i in owner]
        if leaked:
            where = "; ".join(f"block {b.name!r}: {n!r}" for b, n in leaked)
            raise ValueError(
                "with engine 'representation' a block's parameters must reach the losses only "
                f"through its features, but these reach them otherwise: {where}"
            )
        param_reached: list[tuple[bool, ...]] = []
        below_all: set[int] = set()
        for block, tensors in zip(blocks, outputs):
            _, below = _leaves_below([t.grad_fn for t in tensors if t.grad_fn is not None], set())
            below_all.update(below)
            param_reached.append(tuple(id(p) in below for p in block.params))
            if not any(param_reached[-1]):
                raise ValueError(
                    f"block {block.name!r}: none of its parameters is under its features; give "
                    "the block's own output"
                )
        for block, hits in zip(blocks, param_reached):
            stray = [
                n
                for p, n, h in zip(block.params, block.param_names, hits)
                if not h and id(p) in below_all
            ]
            if stray:
                raise ValueError(
                    f"block {block.name!r}: parameter(s) {stray} are under another block's "
                    "features but not under this block's own; give each block its own output"
                )
        others = [t for t in reached_leaves([*roots, *extra]) if id(t) not in owner]
        head = [t for t in others if id(t) in above and id(t) not in below_all]
        under = [t for t in others if id(t) not in above or id(t) in below_all]
        features = [t for tensors in outputs for t in tensors]
        n_feat = len(features)
        widths = [sum(t.numel() for t in tensors) for tensors in outputs]
        matrices = [
            torch.zeros(k, w, dtype=tensors[0].dtype, device=tensors[0].device)
            for w, tensors in zip(widths, outputs)
        ]
        reached = [[False] * k for _ in blocks]
        position = {id(t): i for i, t in enumerate(others)}
        outside: list[torch.Tensor | None] = [None] * len(others)

        def add(leaf: torch.Tensor, grad: torch.Tensor | None) -> None:
            if grad is None:
                return
            j = position[id(leaf)]
            prev = outside[j]
            outside[j] = grad if prev is None else prev + grad

        for i, name in enumerate(names):
            grads = torch.autograd.grad(
                losses[name],
                [*features, *head],
                retain_graph=True,
                allow_unused=True,
                materialize_grads=False,
            )
            start = 0
            for b, tensors in enumerate(outputs):
                col = 0
                for g, t in zip(grads[start : start + len(tensors)], tensors):
                    if g is not None:
                        matrices[b][i, col : col + t.numel()] = g.reshape(-1)
                        reached[b][i] = True
                    col += t.numel()
                start += len(tensors)
            if not any(reached[b][i] for b in range(len(blocks))):
                raise ValueError(
                    f"objective {name!r} does not depend on any block's features "
                    f"(blocks: {[b.name for b in blocks]}); pass a loss that reaches no block "
                    "through extra= instead"
                )
            for leaf, g in zip(head, grads[n_feat:]):
                add(leaf, g)
            del grads
        if under:
            total = roots[0]
            for root in roots[1:]:
                total = total + root
            for leaf, g in zip(
                under,
                torch.autograd.grad(
                    total, under, retain_graph=True, allow_unused=True, materialize_grads=False
                ),
            ):
                add(leaf, g)
        bypass: dict[int, torch.Tensor] = {}
        if extra:
            total = extra[0] if len(extra) == 1 else torch.stack(list(extra)).sum()
            params = [p for b in blocks for p in b.params]
            grads = torch.autograd.grad(
                total,
                [*params, *others],
                retain_graph=True,
                allow_unused=True,
                materialize_grads=False,
            )
            for p, g in zip(params, grads[: len(params)]):
                if g is not None:
                    bypass[id(p)] = g
            for leaf, g in zip(others, grads[len(params) :]):
                add(leaf, g)
        release = _Release(len(blocks), retain_graph)
        return GradientTable.from_passes(
            losses,
            [
                BlockGradients(
                    block.name,
                    matrices[b],
                    tuple(t.shape for t in outputs[b]),
                    tuple(reached[b]),
                    block=block,
                    param_reached=param_reached[b],
                    policy=policy,
                    writer=_writer(block, outputs[b], param_reached[b], bypass, release),
                )
                for b, block in enumerate(blocks)
            ],
            outside=zip(others, outside),
            engine=self.name,
        )


def _writer(
    block: Block,
    outputs: list[torch.Tensor],
    hit: tuple[bool, ...],
    bypass: Mapping[int, torch.Tensor],
    release: _Release,
) -> Writer:
    """One backward of the block's output gradient into its parameters."""
    params = [p for p, h in zip(block.params, hit) if h]

    def write(update: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        sizes = [t.numel() for t in outputs]
        parts = [
            part.view(t.shape).to(t.dtype) for part, t in zip(torch.split(update, sizes), outputs)
        ]
        try:
            grads = torch.autograd.grad(
                outputs, params, grad_outputs=parts, retain_graph=release.keep(), allow_unused=True
            )
        except RuntimeError as error:
            if "second time" not in str(error):
                raise
            raise RuntimeError(
                f"block {block.name!r}: the graph of this representation-level table was freed "
                "when its blocks were written; build it with retain_graph=True to write it again"
            ) from error
        pairs = []
        for p, g in zip(params, grads):
            if g is None:
                continue
            extra = bypass.get(id(p))
            pairs.append((p, g if extra is None else g + extra))
        return pairs

    return write
