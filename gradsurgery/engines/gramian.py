"""The Gramian engine: each block's exact ``k x k`` Gramian without its ``(k, P)`` table.

For methods that read only the Gramian (`gradsurgery.Method.needs_rows` is False), the rows
themselves are never needed: only ``G Gᵀ`` for the decision and ``Σ_i w_i g_i`` for the
update. This engine gets both, exactly, from what the layers already have.

**Factorized layers.** A linear map ``Y = A Wᵀ + b`` (``nn.Linear``, or any ``x @ W``) over
``N`` rows of input ``A`` (samples, or tokens) has, for objective ``i`` with output gradient
``Δ_i = ∂L_i/∂Y`` (``N x out``), the weight gradient ``g_i = Δ_iᵀ A``. So

    ⟨g_i, g_j⟩ = tr(Δ_iᵀ (A Aᵀ) Δ_j)        ⟨∂b_i, ∂b_j⟩ = (1ᵀΔ_i)·(1ᵀΔ_j)

and the update is ``(Σ_i w_i Δ_i)ᵀ A`` (and ``1ᵀ Σ_i w_i Δ_i`` for the bias). The engine
keeps ``Δ_i`` (``k·N·out`` numbers) and ``A`` instead of the rows (``k·in·out``): lighter
whenever the layer sees fewer rows than it has inputs, e.g. an MLP with 1024-wide layers on
a batch of 256. Each objective's backward pass stops at the layer outputs' gradients, so no
per-objective weight gradient is ever formed for such a layer (one matrix product per layer
forms the update after the decision).

**Other parameters** (normalization scales and shifts, convolution kernels, embeddings,
parameters shared by several operations, anything else) keep their per-objective rows, as
the table engine does, but only for those parameters. That is exact for every layer type;
it saves memory where those parameters are a small part of the block (biases, norms) and
saves nothing where they are most of it (a convolutional network). ``source.notes`` says,
per block, which parameters were kept as rows and why.

How layers are found: no module hooks (nothing to register before the forward pass). The
losses' autograd graph is read after the forward: a parameter whose only path into the graph
is (through a transpose) the matrix operand of a matrix product (``addmm`` / ``mm``, which
``nn.Linear`` produces) is factorized; its input ``A`` is the product's saved operand and
``Δ_i`` is captured at the product's output (``torch.autograd.grad`` with a
``GradientEdge``). A weight applied several times (weight sharing across positions or
steps) is factorized over all its uses stacked together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch
from torch.autograd.graph import GradientEdge, Node

from ..core.blocks import Block
from ..core.errors import NonFiniteGradientError
from ..core.gramian import GramianPolicy, compute_gramian
from ..core.table import BlockGradients, GradientTable
from .graph import reached_leaves

__all__ = ["Factorize", "GramianEngine", "GramianSource"]

Factorize = Literal["auto", "always", "never"]
"""When a linear layer is factorized: ``"auto"`` when that holds fewer numbers than its rows,
``"always"`` whenever the pattern allows, ``"never"`` (every parameter kept as rows)."""

_LOW_PRECISION = (torch.float16, torch.bfloat16)
_TRANSPOSE = "TBackward0"
_ADDMM = "AddmmBackward0"
_MM = "MmBackward0"
_CAST = "ToCopyBackward0"
#: Operations on a parameter alone that the walk from a parameter to its use passes through
#: (a transpose, a dtype cast as under autocast): its gradient is theirs, transposed or cast.
_PASS_THROUGH = frozenset({_TRANSPOSE, _CAST})


def _work(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in _LOW_PRECISION else dtype


@dataclass(frozen=True)
class _Use:
    """One way a parameter enters the graph: ``frontier.next_functions[slot]`` leads to it
    through ``chain`` (unary nodes that depend on the parameter only, nearest the frontier
    last)."""

    frontier: Node
    slot: int
    chain: tuple[str, ...]


class _Graph:
    """The losses' autograd graph with its reverse edges."""

    def __init__(self, roots: Sequence[torch.Tensor]) -> None:
        self.parents: dict[Node, list[tuple[Node, int]]] = {}
        self.accumulators: dict[int, Node] = {}
        self.roots: set[Node] = {t.grad_fn for t in roots if t.grad_fn is not None}
        stack = list(self.roots)
        seen: set[Node] = set()
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            variable = getattr(node, "variable", None)
            if isinstance(variable, torch.Tensor):
                self.accumulators[id(variable)] = node
            for slot, (child, _) in enumerate(node.next_functions):
                if child is None:
                    continue
                self.parents.setdefault(child, []).append((node, slot))
                stack.append(child)

    def uses(self, param: torch.Tensor) -> list[_Use]:
        """How ``param`` enters the graph (empty: no loss reaches it)."""
        start = self.accumulators.get(id(param))
        if start is None:
            return []
        out: list[_Use] = []
        stack: list[tuple[Node, tuple[str, ...]]] = [(start, ())]
        while stack:
            node, chain = stack.pop()
            for parent, slot in self.parents.get(node, []):
                inputs = [c for c, _ in parent.next_functions if c is not None]
                if (
                    parent.name() in _PASS_THROUGH
                    and len(inputs) == 1
                    and parent not in self.roots
                    and parent in self.parents
                ):
                    stack.append((parent, (*chain, parent.name())))
                else:
                    out.append(_Use(parent, slot, chain))
        return out


@dataclass
class _Linear:
    """A factorized linear layer: weight ``W`` (and bias ``b``) over its uses ``frontiers``.

    ``transposed``: the product's matrix operand is ``Wᵀ`` (``nn.Linear``), else ``W``.
    ``inputs[f]``: ``A`` of frontier ``f``, ``(N_f, in)``; ``deltas[f]``: ``(N_f, k, out)``,
    ``deltas[f][:, i]`` the output gradient of objective ``i`` (``None`` until an objective
    reaches ``f``). Objective-major inside each row, so that ``K Δ`` is one product.
    """

    weight: torch.Tensor
    bias: torch.Tensor | None
    transposed: bool
    frontiers: list[Node]
    bias_frontiers: list[Node]
    inputs: list[torch.Tensor]
    k: int
    out_features: int
    deltas: list[torch.Tensor | None] = field(default_factory=list)
    parts: int = 0  # blocks' parts (weight, bias) still to be combined

    def stacked(self, bias: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, Δ)`` over the layer's uses (those with the bias if ``bias``), stacked."""
        idx = [u for u, f in enumerate(self.frontiers) if not bias or f in self.bias_frontiers]
        a_parts = [self.inputs[u] for u in idx]
        d_parts = [self._delta(u) for u in idx]
        a = a_parts[0] if len(a_parts) == 1 else torch.cat(a_parts, 0)
        d = d_parts[0] if len(d_parts) == 1 else torch.cat(d_parts, 0)
        return a, d

    def _delta(self, u: int) -> torch.Tensor:
        d = self.deltas[u]
        if d is None:  # reached by no objective: zero gradients
            a = self.inputs[u]
            return a.new_zeros(a.shape[0], self.k, self.out_features)
        return d

    def weight_gramian(self, rescale: bool = True) -> torch.Tensor:
        a, d = self.stacked()
        return _trace_gramian(a, d, rescale)

    def bias_gramian(self, rescale: bool = True) -> torch.Tensor:
        _, d = self.stacked(bias=True)
        return _sum_gramian(d, rescale)

    def update_into(self, weights: torch.Tensor, bias: bool, out: torch.Tensor) -> None:
        """Write the weight's (or the bias's) gradient for ``Σ_i w_i Δ_i`` into ``out``
        (a view shaped like the parameter)."""
        a, d = self.stacked(bias=bias)
        work = _work(d.dtype)
        w = weights.to(device=d.device, dtype=work)
        delta = torch.matmul(w, d.to(work))  # (N, out): Σ_i w_i Δ_i
        direct = out.dtype == work
        if bias:
            result = torch.sum(delta, 0, out=out) if direct else delta.sum(0)
        else:
            left, right = (delta.T, a.to(work)) if self.transposed else (a.to(work).T, delta)
            result = torch.mm(left, right, out=out) if direct else left @ right
        if not direct:
            out.copy_(result)

    def release(self) -> None:
        """Drop the factors once every part of the layer has its update."""
        self.parts -= 1
        if self.parts <= 0:
            self.inputs = []
            self.deltas = []

    def finite(self) -> torch.Tensor:
        parts = [*self.inputs, *(d for d in self.deltas if d is not None)]
        return torch.stack([_all_finite(t) for t in parts]).all()


def _all_finite(t: torch.Tensor) -> torch.Tensor:
    """Whether every entry is finite, from the extremes (NaN propagates through both; one
    pass, no temporary the size of ``t``)."""
    if t.numel() == 0:
        return torch.ones((), dtype=torch.bool, device=t.device)
    low, high = torch.aminmax(t)
    return torch.isfinite(low) & torch.isfinite(high)


def _suspect(gram: torch.Tensor) -> torch.Tensor:
    """Diagonal entries that lost precision (or underflowed) or overflowed."""
    diag = gram.diagonal()
    info = torch.finfo(gram.dtype)
    return (diag < info.tiny / info.eps) | ~torch.isfinite(diag)


def _overflow() -> NonFiniteGradientError:
    return NonFiniteGradientError(
        "the squared norms of finite gradient rows overflow float64; scale the losses down"
    )


def _trace_gramian(a: torch.Tensor, d: torch.Tensor, rescale: bool = True) -> torch.Tensor:
    """``[tr(Δ_iᵀ A Aᵀ Δ_j)]_ij`` for ``A`` ``(N, in)`` and ``Δ`` ``(N, k, out)``.

    Taken in the working dtype; unless ``rescale`` is False (no host check), rows whose
    squared norms leave its range are recomputed in float64 after rescaling (as
    `gradsurgery.core.gramian.compute_gramian` does).
    """
    work = _work(d.dtype)
    gram = _trace_product(a.to(work), d.to(work))
    if not rescale:
        return gram
    suspect = _suspect(gram)
    if not bool(suspect.any()):
        return gram
    if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(d).all())):
        return gram  # truly non-finite: reported by finite()
    sa = a.abs().amax().to(torch.float64)
    if sa == 0 or d[:, suspect].abs().amax() == 0:
        return gram  # the suspect rows are exactly zero: exact
    sd = d.abs().amax().to(torch.float64)
    out = _trace_product(a.to(torch.float64) / sa, d.to(torch.float64) / sd) * (sa * sd) ** 2
    if not bool(torch.isfinite(out).all()):
        raise _overflow()
    return out


def _trace_product(a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    n, k, out = d.shape
    kernel = a @ a.T  # (N, N)
    kd = (kernel @ d.reshape(n, k * out)).view(n, k, out)  # row i: K Δ_i
    return torch.bmm(d, kd.transpose(1, 2)).sum(0)  # Σ_n Δ_n (K Δ)_nᵀ


def _sum_gramian(d: torch.Tensor, rescale: bool = True) -> torch.Tensor:
    """``[(1ᵀΔ_i)·(1ᵀΔ_j)]_ij``: the Gramian of a bias's rows (rescaled as
    `_trace_gramian` unless ``rescale`` is False)."""
    s = d.to(_work(d.dtype)).sum(0)
    gram = s @ s.T
    if not rescale:
        return gram
    suspect = _suspect(gram)
    if not bool(suspect.any()) or not bool(torch.isfinite(d).all()):
        return gram
    s = d.to(torch.float64).sum(0)
    scale = s.abs().amax()
    if scale == 0:
        return gram
    out = ((s / scale) @ (s / scale).T) * scale**2
    if not bool(torch.isfinite(out).all()):
        raise _overflow()
    return out


class GramianSource:
    """One block's rows, kept as factorized layers plus the rows of its other parameters.

    Implements `gradsurgery.core.table.RowSource`.

    Attributes:
        notes: Which parameters keep per-objective rows, and why.
    """

    def __init__(
        self,
        block: Block,
        k: int,
        layers: list[tuple[_Linear, bool]],
        rows: torch.Tensor | None,
        row_params: list[int],
        offsets: list[int],
        policy: GramianPolicy,
        notes: list[str],
        keep: bool,
    ) -> None:
        self._block = block
        self._keep = keep
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None
        self._k = k
        self._layers = layers  # (layer, weight-or-bias in this block)
        self._rows = rows
        self._row_params = row_params
        self._offsets = offsets
        self._policy = policy
        self.notes = notes

    @property
    def rows_numel(self) -> int:
        """How many of the block's parameters are kept as per-objective rows."""
        return 0 if self._rows is None else int(self._rows.shape[1])

    def gramian(self) -> torch.Tensor:
        """The exact ``(k, k)`` Gramian of the block's (never formed) rows."""
        if self._last is not None:
            raise RuntimeError(
                f"block {self._block.name!r}: the Gramian engine dropped this block's factors "
                "after forming its update (the Gramian is kept when it was computed before); "
                "build with GramianEngine(keep_factors=True) to read it afterwards"
            )
        target = self._block.device if self._policy.device == "native" else torch.device("cpu")
        total = torch.zeros(self._k, self._k, dtype=self._policy.dtype, device=target)
        if self._rows is not None:
            total += compute_gramian(self._rows, self._policy).to(target)
        for layer, is_weight in self._layers:
            rescale = self._policy.rescale
            part = layer.weight_gramian(rescale) if is_weight else layer.bias_gramian(rescale)
            total += part.to(device=target, dtype=self._policy.dtype)
        return (total + total.T) / 2

    def combine(self, weights: torch.Tensor) -> torch.Tensor:
        """``Σ_i w_i g_i`` as a ``(P,)`` tensor, formed layer by layer.

        Unless the engine keeps its factors, they are dropped once the update is formed
        (they are the engine's memory): a second call with the same weights returns a copy
        of the first result, one with other weights raises.
        """
        if weights.shape != (self._k,):
            raise ValueError(f"expected {self._k} weights, got shape {tuple(weights.shape)}")
        if self._last is not None:
            last_weights, last = self._last
            if torch.equal(weights.detach().to(last_weights.device), last_weights):
                return last.clone()
            raise RuntimeError(
                f"block {self._block.name!r}: the Gramian engine dropped this block's factors "
                "after forming its update; build with GramianEngine(keep_factors=True) to "
                "combine the rows with other weights"
            )
        block = self._block
        # Every reached parameter's slice is written below; the rest is zeroed. On the CPU
        # the pages of ``out`` are touched one layer at a time while each layer's factors
        # are dropped, so the two are not held whole at the same time.
        out = torch.empty(block.numel, dtype=block.dtype, device=block.device)
        params = block.params
        views = {id(p): out[o : o + p.numel()].view(p.shape) for p, o in zip(params, self._offsets)}
        written = {id(layer.weight if w else layer.bias) for layer, w in self._layers}
        written.update(id(params[j]) for j in self._row_params)
        for p in params:
            if id(p) not in written:
                views[id(p)].zero_()
        if self._rows is not None:
            work = _work(block.dtype)
            w = weights.to(device=block.device, dtype=work)
            start = 0
            for j in self._row_params:
                n = params[j].numel()
                part = self._rows[:, start : start + n]
                views[id(params[j])].view(-1).copy_(w @ part.to(work))
                start += n
            if not self._keep:
                self._rows = None
        for layer, is_weight in self._layers:
            param = layer.weight if is_weight else layer.bias
            assert param is not None
            layer.update_into(weights, not is_weight, views[id(param)])
            if not self._keep:
                layer.release()
        if not self._keep:
            self._layers = []
            # Kept where they are: moving them to the host would wait for the device.
            self._last = (weights.detach().clone(), out)
        return out

    def finite(self) -> torch.Tensor:
        """Whether every row is finite (read from the factors; no row is formed)."""
        if self._last is not None:
            return _all_finite(self._last[1])
        flags = [layer.finite() for layer, _ in self._layers]
        if self._rows is not None:
            flags.append(_all_finite(self._rows))
        if not flags:
            return torch.tensor(True)
        return torch.stack([f.to(flags[0].device) for f in flags]).all()


def _linear_pattern(
    unit: list[torch.Tensor], uses: dict[int, list[_Use]]
) -> tuple[torch.Tensor, torch.Tensor | None, bool] | str:
    """``(weight, bias, transposed)`` if the unit is a linear layer, else why not."""
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    transposed: bool | None = None
    for p in unit:
        for use in uses[id(p)]:
            kind = use.frontier.name()
            if kind not in (_ADDMM, _MM):
                return f"used by {kind}"
            matrix_slot = 2 if kind == _ADDMM else 1
            plain = tuple(c for c in use.chain if c != _CAST)
            if use.slot == matrix_slot and plain in ((), (_TRANSPOSE,)):
                if weight is not None and weight is not p:
                    return "two weights share one product"
                t = plain == (_TRANSPOSE,)
                if transposed is not None and transposed != t:
                    return "used both as W and as Wᵀ"
                weight, transposed = p, t
            elif kind == _ADDMM and use.slot == 0 and not plain and p.dim() == 1:
                if bias is not None and bias is not p:
                    return "two biases share one product"
                bias = p
            else:
                return f"enters {kind} as operand {use.slot} through {list(use.chain) or 'itself'}"
    if weight is None or transposed is None:
        return "a bias without its weight"
    if bias is not None and bias is weight:
        return "used as weight and bias"
    return weight, bias, transposed


class GramianEngine:
    """Build a table whose blocks hold their exact Gramian, not their ``(k, P)`` rows.

    Same Gramian and same update as the table engine (to floating-point summation order),
    for methods that do not read the rows (`gradsurgery.Method.needs_rows` False; the
    others are refused with a clear error by `gradsurgery.Method.check_table`).

    Cost per step, for a block made of linear layers: ``k`` backward passes that stop at
    the layers' outputs (no per-objective weight gradient), one ``N x N`` kernel and ``k``
    products with it per layer for the Gramian, one matrix product per layer for the
    update. Memory: ``k`` output gradients per layer instead of ``k`` weight gradients.
    Parameters that are not factorized keep their rows (see the module documentation).

    Args:
        factorize: ``"auto"`` (default: a linear layer is factorized when its output
            gradients and input hold fewer numbers than its rows), ``"always"`` or
            ``"never"``.
        max_row_fraction: If given, raise when more than this fraction of a block's
            parameters would be kept as rows (to make sure a run is memory-light).
        keep_factors: Keep the factors after a block's update is formed, so that its rows
            can be combined again with other weights (default: drop them, which lowers the
            step's peak memory by their size).
    """

    name = "gramian"

    def __init__(
        self,
        *,
        factorize: Factorize = "auto",
        max_row_fraction: float | None = None,
        keep_factors: bool = False,
    ) -> None:
        if factorize not in ("auto", "always", "never"):
            raise ValueError(f"factorize must be 'auto', 'always' or 'never', got {factorize!r}")
        if max_row_fraction is not None and not 0 <= max_row_fraction <= 1:
            raise ValueError(f"max_row_fraction must be in [0, 1], got {max_row_fraction!r}")
        self.factorize: Factorize = factorize
        self.max_row_fraction = max_row_fraction
        self.keep_factors = keep_factors

    def __repr__(self) -> str:
        return (
            f"GramianEngine(factorize={self.factorize!r}, "
            f"max_row_fraction={self.max_row_fraction!r}, keep_factors={self.keep_factors!r})"
        )

    def build(
        self,
        losses: Mapping[str, torch.Tensor],
        blocks: Sequence[Block],
        *,
        extra: Sequence[torch.Tensor] = (),
        policy: GramianPolicy,
        retain_graph: bool = False,
    ) -> GradientTable:
        """Back-propagate each objective to the layers' outputs and gather the factors.

        Args:
            losses: Objective names mapped to scalar losses (already validated).
            blocks: The blocks (already validated).
            extra: Scalar losses outside the surgery (plain gradient everywhere they reach).
            policy: The Gramian policy of the table's blocks.
            retain_graph: Keep the graph after the last pass.

        Returns:
            A table whose blocks hold a `GramianSource` instead of rows.

        Raises:
            ValueError: If an objective reaches no block parameter, or more than
                ``max_row_fraction`` of a block would be kept as rows.
        """
        names = list(losses)
        k = len(names)
        roots = [*losses.values(), *extra]
        params = [p for b in blocks for p in b.params]
        ids = {id(p) for p in params}
        others = [t for t in reached_leaves(roots) if id(t) not in ids]
        graph = _Graph(roots)
        uses = {id(p): graph.uses(p) for p in params}
        layers, row_set, reasons = self._plan(params, uses, k)
        block_of = {id(p): b for b, block in enumerate(blocks) for p in block.params}

        # Inputs of every pass: the factorized layers' outputs, the row parameters, the
        # leaves outside the blocks.
        frontiers: list[Node] = []
        for layer in layers:
            frontiers.extend(layer.frontiers)
        row_params = [p for p in params if id(p) in row_set]
        edges = [GradientEdge(f, 0) for f in frontiers]
        inputs: list[torch.Tensor | GradientEdge] = [*edges, *row_params, *others]
        n_edges = len(edges)
        n_rows = len(row_params)
        if not n_edges and not n_rows:
            raise ValueError(
                f"no objective reaches any parameter of the blocks {[b.name for b in blocks]}"
            )

        offsets: list[list[int]] = []
        for block in blocks:
            start, offs = 0, []
            for p in block.params:
                offs.append(start)
                start += p.numel()
            offsets.append(offs)
        row_index = [[j for j, p in enumerate(b.params) if id(p) in row_set] for b in blocks]
        row_width = [sum(b.params[j].numel() for j in idx) for b, idx in zip(blocks, row_index)]
        row_offset: dict[int, tuple[int, int]] = {}
        for b, block in enumerate(blocks):
            start = 0
            for j in row_index[b]:
                row_offset[id(block.params[j])] = (b, start)
                start += block.params[j].numel()
        rows = [
            torch.zeros(k, w, dtype=block.dtype, device=block.device) if w else None
            for block, w in zip(blocks, row_width)
        ]
        layer_of = {f: layer for layer in layers for f in layer.frontiers}
        for layer in layers:
            layer.deltas = [None] * len(layer.frontiers)
        reached = [[False] * k for _ in blocks]
        param_hit: set[int] = set()
        outside: list[torch.Tensor | None] = [None] * len(others)

        for i, name in enumerate(names):
            keep = retain_graph or i < k - 1 or bool(extra)
            grads = torch.autograd.grad(
                losses[name],
                cast(Any, inputs),  # tensors and edges together (accepted at run time)
                retain_graph=keep,
                allow_unused=True,
                materialize_grads=False,
            )
            hit = False
            for f, g in zip(frontiers, grads[:n_edges]):
                if g is None:
                    continue
                layer = layer_of[f]
                u = layer.frontiers.index(f)
                if layer.deltas[u] is None:
                    layer.deltas[u] = g.new_zeros(g.shape[0], k, g.shape[1])
                store = layer.deltas[u]
                assert store is not None
                store[:, i] = g
                for owned in (layer.weight, layer.bias):
                    if owned is None or (owned is layer.bias and f not in layer.bias_frontiers):
                        continue
                    reached[block_of[id(owned)]][i] = True
                    param_hit.add(id(owned))
                hit = True
            for p, g in zip(row_params, grads[n_edges : n_edges + n_rows]):
                if g is None:
                    continue
                if g.layout != torch.strided:
                    raise ValueError(
                        f"parameter of shape {tuple(p.shape)} received a sparse gradient; "
                        "gradient surgery needs dense gradients"
                    )
                b, start = row_offset[id(p)]
                matrix = rows[b]
                assert matrix is not None
                matrix[i, start : start + g.numel()] = g.reshape(-1)
                reached[b][i] = True
                param_hit.add(id(p))
                hit = True
            for j, g in enumerate(grads[n_edges + n_rows :]):
                if g is not None:
                    prev = outside[j]
                    outside[j] = g if prev is None else prev + g
            del grads
            if not hit:
                raise ValueError(
                    f"objective {name!r} does not depend on any block parameter "
                    f"(blocks: {[b.name for b in blocks]}); pass a loss that reaches no block "
                    "through extra= instead"
                )

        bypass: list[torch.Tensor | None] = [None] * len(blocks)
        if extra:
            total = extra[0] if len(extra) == 1 else torch.stack(list(extra)).sum()
            grads = torch.autograd.grad(
                total,
                [*params, *others],
                retain_graph=retain_graph,
                allow_unused=True,
                materialize_grads=False,
            )
            for p, g in zip(params, grads[: len(params)]):
                if g is None:
                    continue
                b = block_of[id(p)]
                block = blocks[b]
                vector = bypass[b]
                if vector is None:
                    vector = torch.zeros(block.numel, dtype=block.dtype, device=block.device)
                    bypass[b] = vector
                j = next(j for j, q in enumerate(block.params) if q is p)
                vector[offsets[b][j] : offsets[b][j] + g.numel()] = g.reshape(-1)
            for j, g in enumerate(grads[len(params) :]):
                if g is not None:
                    prev = outside[j]
                    outside[j] = g if prev is None else prev + g

        tables = []
        for b, block in enumerate(blocks):
            mine = {id(p) for p in block.params}
            parts: list[tuple[_Linear, bool]] = []
            for layer in layers:
                if id(layer.weight) in mine:
                    parts.append((layer, True))
                if layer.bias is not None and id(layer.bias) in mine:
                    parts.append((layer, False))
            notes = [
                f"block {block.name!r}: parameter {block.param_names[j]!r} kept as rows "
                f"({reasons[id(block.params[j])]})"
                for j in row_index[b]
            ]
            if self.max_row_fraction is not None and block.numel:
                fraction = row_width[b] / block.numel
                if fraction > self.max_row_fraction:
                    raise ValueError(
                        f"block {block.name!r}: {fraction:.0%} of its parameters would be kept "
                        f"as per-objective rows (max_row_fraction={self.max_row_fraction}): "
                        + "; ".join(notes)
                    )
            for layer, _ in parts:
                layer.parts += 1
            source = GramianSource(
                block, k, parts, rows[b], row_index[b], offsets[b], policy, notes, self.keep_factors
            )
            tables.append(
                BlockGradients(
                    block.name,
                    None,
                    tuple(p.shape for p in block.params),
                    tuple(reached[b]),
                    block=block,
                    param_reached=tuple(id(p) in param_hit for p in block.params),
                    bypass=bypass[b],
                    policy=policy,
                    source=source,
                    numel=block.numel,
                )
            )
        return GradientTable.from_passes(
            losses,
            tables,
            outside=zip(others, outside),
            engine=self.name,
        )

    def _plan(
        self, params: list[torch.Tensor], uses: dict[int, list[_Use]], k: int
    ) -> tuple[list[_Linear], set[int], dict[int, str]]:
        """Group parameters that share an operation; factorize the linear ones."""
        by_frontier: dict[Node, list[torch.Tensor]] = {}
        parent: dict[int, int] = {id(p): id(p) for p in params}

        def find(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for p in params:
            for use in uses[id(p)]:
                others = by_frontier.setdefault(use.frontier, [])
                for q in others:
                    parent[find(id(q))] = find(id(p))
                others.append(p)
        groups: dict[int, list[torch.Tensor]] = {}
        for p in params:
            if uses[id(p)]:
                groups.setdefault(find(id(p)), []).append(p)
        layers: list[_Linear] = []
        rows: set[int] = set()
        reasons: dict[int, str] = {}
        for unit in groups.values():
            found = (
                _linear_pattern(unit, uses) if self.factorize != "never" else "factorize='never'"
            )
            if isinstance(found, str):
                for p in unit:
                    rows.add(id(p))
                    reasons[id(p)] = found
                continue
            weight, bias, transposed = found
            layer = self._linear(weight, bias, transposed, uses, k)
            if isinstance(layer, str):
                for p in unit:
                    rows.add(id(p))
                    reasons[id(p)] = layer
                continue
            layers.append(layer)
        return layers, rows, reasons

    def _linear(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        transposed: bool,
        uses: dict[int, list[_Use]],
        k: int,
    ) -> _Linear | str:
        frontiers: list[Node] = []
        for use in uses[id(weight)]:
            if use.frontier not in frontiers:
                frontiers.append(use.frontier)
        bias_frontiers = [u.frontier for u in uses[id(bias)]] if bias is not None else []
        if any(f not in frontiers for f in bias_frontiers):
            return "bias used without its weight"
        inputs = []
        for f in frontiers:
            try:
                if f.name() == _ADDMM:
                    if float(f._saved_alpha) != 1 or float(f._saved_beta) != 1:  # type: ignore[attr-defined]
                        return "addmm with alpha or beta other than 1"
                    a = f._saved_mat1  # type: ignore[attr-defined]
                else:
                    a = f._saved_self  # type: ignore[attr-defined]
            except (AttributeError, RuntimeError) as error:
                return f"saved input not readable ({error})"
            if not isinstance(a, torch.Tensor) or a.dim() != 2:
                return "input is not a matrix"
            inputs.append(a.detach())
        out_features = weight.shape[0] if transposed else weight.shape[1]
        in_features = weight.shape[1] if transposed else weight.shape[0]
        n = sum(a.shape[0] for a in inputs)
        if self.factorize == "auto":
            factors = k * n * out_features + n * in_features
            row_numel = k * (weight.numel() + (bias.numel() if bias is not None else 0))
            if factors >= row_numel:
                return (
                    f"factorizing would hold {factors:,} numbers ({n} input rows), its rows "
                    f"{row_numel:,}"
                )
        return _Linear(
            weight=weight,
            bias=bias,
            transposed=transposed,
            frontiers=frontiers,
            bias_frontiers=bias_frontiers,
            inputs=inputs,
            k=k,
            out_features=out_features,
        )
