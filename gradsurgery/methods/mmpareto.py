"""MMPareto: Pareto integration of multimodal and unimodal gradients (Wei & Hu, ICML 2024)."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from ..core.checks import check
from ..core.families import CrossBlockMethod
from ..core.method import Decision, Kind
from ..core.signals import SignalMap
from ..core.table import BlockGradients, GradientTable
from ..registry import register
from ..solvers.min_norm import min_norm_point

__all__ = ["MMPareto", "min_norm_weights", "mmpareto_direction", "mmpareto_magnitude"]

GroupScope = Literal["group", "block"]


def min_norm_weights(gramian: np.ndarray) -> np.ndarray:
    """Weights ``w ∈ Δ_n`` of the min-norm point of the rows' convex hull (MGDA, spec B2).

    Two rows: the closed form (``w_1 = (c − b)/(a + c − 2b)`` clipped to the ends, with
    ``a, b, c = K_11, K_12, K_22``); more: the exact solver
    `gradsurgery.solvers.min_norm.min_norm_point`. The update ``Σ_i w_i g_i`` is unique even
    when ``w`` is not (a singular Gramian).

    Args:
        gramian: ``(n, n)`` float64 Gramian of the rows.

    Returns:
        ``(n,)`` non-negative weights summing to 1.
    """
    n = gramian.shape[0]
    if n == 1:
        return np.ones(1)
    if n == 2:
        a, b, c = float(gramian[0, 0]), float(gramian[0, 1]), float(gramian[1, 1])
        if b >= a:
            return np.array([1.0, 0.0])
        if b >= c:
            return np.array([0.0, 1.0])
        w1 = (c - b) / (a + c - 2.0 * b)
        return np.array([w1, 1.0 - w1])
    weights: np.ndarray = min_norm_point(gramian).weights
    return weights


def mmpareto_direction(
    group_gramian: np.ndarray, zero_cosine: float = 0.0
) -> tuple[np.ndarray, dict[str, Any]]:
    """MMPareto's direction weights over the ``n`` rows that reach a group (an encoder).

    If every pair of rows has a positive cosine, ``w = 1/n`` (uniform); otherwise ``w`` is
    the min-norm (MGDA) point, `min_norm_weights`. A cosine of 0 is a conflict.

    Args:
        group_gramian: ``(n, n)`` Gramian summed over the group's blocks (``n ≥ 2``).
        zero_cosine: Cosines up to this value count as 0 (below the Gramian's rounding).

    Returns:
        ``(w, info)`` with ``info`` holding ``conflict``, ``min_cosine`` and
        ``pareto_weights`` (``w`` as a list).
    """
    n = group_gramian.shape[0]
    norms = np.sqrt(np.clip(np.diag(group_gramian), 0.0, None))
    off = ~np.eye(n, dtype=bool)
    dots = group_gramian[off]
    denominators = np.outer(norms, norms)[off]
    cos = np.divide(dots, denominators, out=np.zeros_like(dots), where=denominators > 0)
    conflict = bool((cos <= zero_cosine).any())
    w = min_norm_weights(group_gramian) if conflict else np.full(n, 1.0 / n)
    info = {"conflict": conflict, "min_cosine": float(cos.min()), "pareto_weights": w.tolist()}
    return w, info


def mmpareto_magnitude(
    new_norm: float, sum_norm: float, largest_row_norm: float, tolerance: float, n: int = 2
) -> tuple[float | None, bool]:
    """MMPareto's per-block stretch: ``max(1, ‖Σ_i g_i‖ / ‖new‖)``.

    Args:
        new_norm: ``‖n Σ_i w_i g_i‖`` on the block.
        sum_norm: ``‖Σ_i g_i‖`` on the block.
        largest_row_norm: The largest ``‖g_i‖`` on the block.
        n: The number of rows combined.
        tolerance: ``new`` counts as cancelled (Pareto-stationary rows) when
            ``new_norm / n ≤ tolerance · largest_row_norm``, i.e. when the min-norm point
            ``Σ_i w_i g_i`` itself is below the precision it was solved to.

    Returns:
        ``(stretch, degenerate)``: the factor for ``new``, or ``None`` with
        ``degenerate=True`` when ``new`` cancelled and the plain sum is kept instead.
    """
    if not new_norm > n * tolerance * largest_row_norm:
        return None, True
    return max(1.0, sum_norm / new_norm), False


def _numpy(gramian: torch.Tensor) -> np.ndarray:
    return np.asarray(gramian.detach().to(device="cpu", dtype=torch.float64).numpy())


def _dtype(block: BlockGradients) -> torch.dtype:
    return block.block.dtype if block.block is not None else block.matrix.dtype


def _eps(dtype: torch.dtype) -> float:
    """The rounding unit of the precision a Gramian is formed in (float32 for half ones)."""
    work = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    return float(torch.finfo(work).eps)


def _tolerance(dtype: torch.dtype) -> float:
    """Relative norm under which a row counts as negligible and a combination as cancelled:
    ``10·√eps`` of the precision the Gramian was formed in."""
    return 10.0 * math.sqrt(_eps(dtype))


@register
class MMPareto(CrossBlockMethod):
    r"""MMPareto (Y. Wei, D. Hu; ICML 2024, "MMPareto: Boosting Multimodal Learning with
    Innocent Unimodal Assistance").

    Setting: one encoder per modality, a fused head with loss ``L_mm`` and one unimodal head
    per modality with loss ``L_m``. Objectives are ``L_mm`` and every ``L_m`` (any names);
    blocks are the encoders, whole or split into several blocks each (heads stay outside the
    blocks and receive the plain gradient of ``L_mm + Σ_m L_m``). No signal is needed.

    **Groups.** MMPareto decides the direction on the whole encoder and the magnitude per
    parameter tensor. An encoder's blocks are found from the table: blocks reached by the
    same set of objectives form one group (an audio encoder's blocks are reached by ``L_mm``
    and ``L_audio`` only). In a table from plain matrices every row counts as reaching every
    block, so there an all-zero row counts as not reaching; so does, in any table, a row
    shorter than ``10√eps`` of the block's longest (``eps`` of the block's precision, float32
    for half precisions): its share of the sum is below rounding, and left in it would pull
    the min-norm point to itself. ``scope="block"`` makes every block its own group.

    **Direction** (on the group Gramian ``K^E = Σ_{b∈E} K_b`` over the ``n`` objectives that
    reach the group, ``n = 2`` in the paper): if ``cos(g_mm, g_m) > 0`` the weights are
    ``w = (½, ½)``; otherwise ``w`` is the min-norm point of the rows' convex hull (MGDA),

    $$w = \arg\min_{w\in\Delta_n} \Big\lVert \sum_i w_i g_i \Big\rVert^2 .$$

    **Magnitude** (per block ``b``): ``new_b = n Σ_i w_i g_i^b``; if the plain sum is longer,
    ``new_b`` is stretched to ``‖Σ_i g_i^b‖``; finally ``× γ``. As row weights,

    $$c_b = \gamma \cdot \max\!\Big(1, \frac{\lVert \sum_i g_i^b \rVert}
      {\lVert n \sum_i w_i g_i^b \rVert}\Big)\, n\, w .$$

    ``‖new_b‖`` is taken on the formed vector (from the Gramian a short ``new_b`` would lose
    digits), and so is the sum's norm when the engine keeps the rows (one extra pass over
    the block), as the official code does per tensor; memory-light engines use ``1ᵀK_b1``.

    Defaults and deliberate deviations:

    * ``gamma = 1`` (the library's scale convention: identical rows give their sum). The
      official script hard-codes ``γ = 1.5`` (BalanceBenchmark ``alpha: 1.5``): pass
      ``gamma=1.5`` to reproduce it.
    * The min-norm solve is exact (closed form for two rows). The official solver clamps the
      two-row weights to ``0.999 / 0.001`` at the ends; in the conflict branch that only
      happens with a zero row, where both give ``γ`` times the plain sum.
    * Cosine 0 takes the conflict branch, as the official ``cos > 0`` test does; a cosine
      below ``10·eps`` (the Gramian's rounding, e.g. a dot product that underflowed) counts
      as 0. A zero (or negligible, see Groups) row does not take part. A ``new_b`` that cancels
      (Pareto-stationary rows: ``‖Σ_i w_i g_i^b‖ ≤ 10√eps · max_i ‖g_i^b‖``, ``eps`` of the
      decision's precision) keeps ``γ`` times the plain sum instead of stretching rounding
      noise to a full-size step in an arbitrary direction.
    * ``n > 2`` objectives on one group (e.g. a trunk shared by several modalities) is a
      generalisation: uniform weights when every pair has a positive cosine, else MGDA, and
      the factor ``n`` (the official code's 2).
    * ``γ`` multiplies every block, as the official code multiplies every encoder tensor: a
      block that fewer than two objectives reach (a zero unimodal row, or a head put in a
      block) gets ``γ`` times its plain gradient. Keep heads out of the blocks.

    State: none.

    Args:
        gamma: Final magnitude factor ``γ`` (default 1; the official code uses 1.5).
        scope: ``"group"`` (default: direction on the encoder, magnitude per block, as the
            official code) or ``"block"`` (both per block).

    Report details per block: ``group`` (the blocks of its group), ``objectives`` (those
    that reach it), ``conflict``, ``min_cosine`` (smallest pairwise cosine on the group;
    ``None`` below two objectives), ``pareto_weights`` (``w``), ``stretch`` (the
    norm-restoring factor, ≥ 1) and ``degenerate`` (``new_b`` cancelled; the plain sum was
    kept).
    """

    name = "mmpareto"
    kinds: ClassVar[frozenset[Kind]] = frozenset({"multimodal"})
    uses_gramian = True

    def __init__(self, *, gamma: float = 1.0, scope: GroupScope = "group") -> None:
        super().__init__()
        self.gamma: float = check("gamma", gamma, "float", low=0.0, low_open=True)
        self.scope: GroupScope = check("scope", scope, "str", options=("group", "block"))
        self._rows: dict[str, list[int]] = {}

    def groups(self, table: GradientTable) -> dict[tuple[str, ...], list[str]]:
        """The encoder groups: objectives that reach them → their blocks, in table order.

        In ``"block"`` scope the key starts with the block's name (every block alone).
        """
        out: dict[tuple[str, ...], list[str]] = {}
        for name, block in table.blocks.items():
            diag = block.gramian.detach().diagonal().tolist()
            floor = _tolerance(_dtype(block)) ** 2 * max([*diag, 0.0])
            reach = tuple(
                o for o, hit, d in zip(table.objectives, block.reached, diag) if hit and d > floor
            )
            key = (name, *reach) if self.scope == "block" else ("", *sorted(reach))
            out.setdefault(key, []).append(name)
        return out

    def decide(self, table: GradientTable, signals: SignalMap | None) -> dict[str, Decision]:
        out: dict[str, Decision] = {}
        self._rows = {}
        for key, names in self.groups(table).items():
            reach = sorted(key[1:], key=table.objectives.index)
            idx = [table.index(o) for o in reach]
            weights = torch.ones(table.k, dtype=torch.float64)
            info: dict[str, Any] = {
                "conflict": False,
                "min_cosine": None,
                "pareto_weights": [1.0] * len(idx),
            }
            if len(idx) >= 2:
                grams = [_numpy(table[m].gramian)[np.ix_(idx, idx)] for m in names]
                zero = 10.0 * _eps(_dtype(table[names[0]]))
                w, info = mmpareto_direction(np.sum(grams, axis=0), zero)
                weights[idx] = torch.from_numpy(len(idx) * w)
            for m in names:
                details = {"group": tuple(names), "objectives": tuple(reach), **info}
                out[m] = Decision(weights.clone(), details=details)
                self._rows[m] = idx
        return out

    def update(self, block: BlockGradients, decision: Decision) -> torch.Tensor:
        """``γ·stretch·new_b``; ``‖new_b‖`` is taken on the formed vector, and so is the
        sum's norm when the engine keeps the rows (else from the Gramian)."""
        idx = self._rows.pop(block.name, [])
        details = decision.details
        if len(idx) < 2:
            decision.weights = decision.weights * self.gamma
            details.update(stretch=1.0, degenerate=False)
            return block.combine(decision.weights)
        new = block.combine(decision.weights)
        ones = torch.ones_like(decision.weights)
        gram = block.gramian.detach().to(device="cpu", dtype=torch.float64)
        plain = block.combine(ones) if block.has_rows else None
        plain_norm = _norm(plain) if plain is not None else math.sqrt(max(float(gram.sum()), 0))
        largest = math.sqrt(max(float(gram.diagonal()[idx].max()), 0.0))
        stretch, degenerate = mmpareto_magnitude(
            _norm(new), plain_norm, largest, _tolerance(new.dtype), len(idx)
        )
        details.update(stretch=1.0 if stretch is None else stretch, degenerate=degenerate)
        if stretch is None:
            decision.weights = ones * self.gamma
            if plain is None:
                return block.combine(decision.weights)
            return plain.mul_(self.gamma)
        decision.weights = decision.weights * (self.gamma * stretch)
        return new.mul_(self.gamma * stretch)


def _norm(vector: torch.Tensor) -> float:
    work = vector if vector.dtype == torch.float64 else vector.float()
    return float(torch.linalg.vector_norm(work))
