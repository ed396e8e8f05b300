"""GMP: Gradient Modulation and Projection for multimodal domain generalization."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from ..core.arrays import namespace
from ..core.checks import check
from ..core.families import CrossBlockMethod
from ..core.method import Decision, Kind
from ..core.signals import SignalMap, require_signal, signal_on_device
from ..core.table import GradientTable
from ..registry import register
from ..solvers.modulation import CoefficientForm, coefficient_vector, ratio_vector

__all__ = ["GMP", "GMPBlockState", "gmp_block_weights"]

Modulation = Literal["decoupled", "unified", "without_k", "without_p", "none"]
Projection = Literal["adaptive", "always_cls", "always_dom", "symmetric", "reverse", "none"]
_MODULATIONS = ("decoupled", "unified", "without_k", "without_p", "none")
_PROJECTIONS = ("adaptive", "always_cls", "always_dom", "symmetric", "reverse", "none")


@dataclass(frozen=True)
class GMPBlockState:
    """One modality's IGDM quantities on one step.

    Attributes:
        rho: Semantic discrepancy ratio ρ (Eq. 8).
        sigma: Domain discrepancy ratio σ (Eq. 8); 1 without a domain objective.
        k: Coefficient of the classification gradient (Eq. 9, after the ablation switch).
        p: Coefficient of the domain gradient (Eq. 10, after the ablation switch).
    """

    rho: float
    sigma: float
    k: float
    p: float

    @property
    def gamma(self) -> float:
        """CAGP's task-strength ratio Γ = ρ / σ."""
        return self.rho / self.sigma if self.sigma > 0 else float("inf")


def _project_flags(gamma: Any, projection: Projection) -> tuple[Any, Any]:
    """Whether CAGP (or an ablation) projects ``(cls, dom)`` on a conflict, given Γ."""
    xp = namespace(gamma)
    stronger_cls = gamma >= 1  # Γ ≥ 1: classification relatively stronger (tie → cls)
    yes, no = xp.ones_like(stronger_cls), xp.zeros_like(stronger_cls)
    if projection == "adaptive":  # project the relatively stronger task
        return stronger_cls, ~stronger_cls
    if projection == "reverse":  # protect the stronger task instead
        return ~stronger_cls, stronger_cls
    if projection == "always_cls":
        return yes, no
    if projection == "always_dom":
        return no, yes
    if projection == "symmetric":
        return yes, yes
    return no, no


def gmp_block_weights(
    gramian: Any, k: Any, p: Any, gamma: Any, projection: Projection = "adaptive"
) -> tuple[Any, Any, Any]:
    """CAGP on one modality, in the coefficient space of its two rows ``(g_c, g_d)``.

    ``ĝ_c = k·g_c`` and ``ĝ_d = p·g_d`` (Eq. 11). If ``ĝ_c·ĝ_d < 0`` the chosen gradient is
    projected onto the normal plane of the other (Eqs. 12–15); the symmetric ablation
    projects both, each against the other's unprojected version. A zero gradient is never
    divided by. Written once for NumPy (the host) and torch (a device, no host
    synchronisation): see `gradsurgery.core.arrays`.

    Args:
        gramian: ``2 x 2`` float64 Gramian of ``(g_c, g_d)``.
        k: 0-d coefficient of ``g_c``.
        p: 0-d coefficient of ``g_d``.
        gamma: 0-d task-strength ratio ``Γ = ρ/σ``.
        projection: ``"adaptive"`` (CAGP) or an ablation.

    Returns:
        ``(weights, projected, conflict)``: ``(2,)`` weights over ``(g_c, g_d)``, a ``(2,)``
        boolean mask of the projected tasks and whether the modulated gradients conflicted.
    """
    xp = namespace(gramian)
    cc, cd, dd = k * k * gramian[0, 0], k * p * gramian[0, 1], p * p * gramian[1, 1]
    conflict = cd < 0
    want_c, want_d = _project_flags(gamma, projection)
    proj_c, proj_d = conflict & want_c, conflict & want_d
    one, zero = xp.ones_like(cc), xp.zeros_like(cc)
    # ĝ_c − (ĝ_c·ĝ_d/‖ĝ_d‖²) ĝ_d has coefficients (k, −(cd/dd)·p) over (g_c, g_d); a
    # squared norm that underflows to 0 leaves the projected gradient as it is.
    move_c, move_d = proj_c & (dd > 0), proj_d & (cc > 0)
    shift_c = xp.where(move_c, cd / xp.where(move_c, dd, one), zero)
    shift_d = xp.where(move_d, cd / xp.where(move_d, cc, one), zero)
    weights = xp.stack([k - shift_d * k, p - shift_c * p])
    return weights, xp.stack([proj_c, proj_d]), conflict


def _pair_cosine(pair: Any) -> Any:
    """The cosine of the two rows of a ``2 x 2`` Gramian (0 when one is zero)."""
    xp = namespace(pair)
    denom = xp.sqrt(xp.where(pair[0, 0] * pair[1, 1] > 0, pair[0, 0] * pair[1, 1], 0 * pair[0, 1]))
    positive = denom > 0
    cosine = xp.where(positive, pair[0, 1] / xp.where(positive, denom, 1 + 0 * denom), 0 * denom)
    return xp.clip(cosine, -1.0, 1.0)


@register
class GMP(CrossBlockMethod):
    r"""GMP (Li, Shen, Li, Xu, Khan; AAAI-26, arXiv 2603.14175, "Gradient Modulation and
    Projection for multimodal domain generalization").

    Blocks are modality encoders ``θ^m``. Objectives are ``cls`` — the classification loss
    ``L_c`` — and ``dom`` — the domain loss ``L_d`` seen through a gradient-reversal layer of
    coefficient ``λ``, so the encoder's row is ``g_d^m = −λ∇_{θ^m} L_d`` (Eq. 2). Signals
    are per modality: ``signals[m]["cls"]`` = semantic confidence ``q̄^m`` (batch-mean
    true-class probability of the modality's own logits, Eq. 6) and ``signals[m]["dom"]`` =
    domain confidence ``c̄^m`` (batch-mean true-domain probability, Eq. 7); see
    `gradsurgery.signals`.

    **IGDM** (inter-modality gradient decoupled modulation). Discrepancy ratios (Eq. 8)

    $$\rho^m = \frac{\bar q^m}{\bar q^{\bar m}}, \qquad
      \sigma^m = \frac{\bar c^{\bar m}}{\bar c^m},$$

    coefficients (Eqs. 9–10) ``k^m = 1 − tanh(α_k ρ^m)`` if ``ρ^m > 1`` else 1, and
    ``p^m = 1 − tanh(α_p σ^m)`` if ``σ^m > 1`` else 1, applied as
    ``ĝ_c^m = k^m g_c^m``, ``ĝ_d^m = p^m g_d^m`` (Eq. 11).

    **CAGP** (conflict-adaptive gradient projection). Per modality, over the whole flattened
    block: if ``ĝ_c·ĝ_d ≥ 0`` the update is ``ĝ_c + ĝ_d``. Otherwise, with ``Γ = ρ/σ``:
    ``Γ > 1`` (classification relatively stronger) projects the classification gradient,

    $$\tilde g_c = \hat g_c - \frac{\hat g_c\cdot\hat g_d}{\|\hat g_d\|^2}\hat g_d,
      \qquad G = \tilde g_c + \hat g_d \quad (12\text{–}13),$$

    and ``Γ < 1`` projects the domain gradient symmetrically (Eqs. 14–15). The weaker task's
    gradient is never altered.

    Deliberate choices where the paper is silent (each documented and tested):

    * ``M > 2`` modalities: the "other modality" ``m̄`` is the mean over the others (as the
      authors' benchmark code); ``M = 1``: ``ρ = σ = 1``, so ``k = p = 1`` and a conflict
      takes the tie rule.
    * Tie ``Γ = 1`` with a conflict projects the classification gradient.
    * ``eps`` (default ``1e-6``) is added to the ratios' denominators; a zero gradient never
      divides by zero (its dot product is 0, so nothing is projected).
    * Single source domain (no ``dom`` objective in the table): ``p = 1``, ``σ = 1`` and no
      projection; only the semantic modulation acts.
    * Coefficients and decisions are constants of the step (no gradient flows through them).
    * Only the blocks' rows are touched: the fused classifier and the discriminator, outside
      the blocks, get the ordinary gradients from `gradsurgery.backward` — in
      particular the discriminator descends ``L_d``.

    Ablations (the paper's Table 4) by configuration:

    | Table 4 row | arguments |
    |---|---|
    | IGDM only | ``projection="none"`` |
    | CAGP only | ``modulation="none"`` |
    | Unified modulation (one coefficient) | ``modulation="unified"`` (``k`` on both) |
    | IGDM without ``k`` / without ``p`` | ``modulation="without_k"`` / ``"without_p"`` |
    | Always project cls / dom | ``projection="always_cls"`` / ``"always_dom"`` |
    | PCGrad (symmetric) instead of CAGP | ``projection="symmetric"`` |
    | Reverse CAGP (protect the stronger) | ``projection="reverse"`` |

    Scale: with equal confidences and no conflict the update is ``g_c + g_d``, the plain sum.

    Decides on the device: ``sync=False`` keeps the step free of host synchronisation (see
    the On-device step page).

    Args:
        alpha_k: Suppression strength of the classification gradient (default 0.5).
        alpha_p: Suppression strength of the domain gradient (default 0.5).
        eps: Added to the ratios' denominators.
        cls: Name of the classification objective.
        dom: Name of the domain-invariance objective.
        modulation: ``"decoupled"`` (IGDM) or an ablation.
        projection: ``"adaptive"`` (CAGP) or an ablation.
        coefficient: ``"published"`` (Eqs. 9–10) or ``"continuous"`` (``1 − tanh(α(r−1)₊)``).

    Report details per modality: ``rho``, ``sigma``, ``k``, ``p``, ``gamma``, ``cosine``
    (of ``g_c`` and ``g_d``), ``conflict`` (of the modulated gradients), ``projected_task``
    (``"cls"``, ``"dom"``, ``"both"`` or ``None``), ``semantic_confidence``,
    ``domain_confidence``.
    """

    name = "gmp"
    kinds: ClassVar[frozenset[Kind]] = frozenset({"multimodal"})
    max_objectives = 2
    needs_signals = (
        "semantic confidence per modality block, for the classification objective",
        "domain confidence per modality block, for the domain objective (if present)",
    )
    uses_gramian = True
    on_device = True

    def __init__(
        self,
        *,
        alpha_k: float = 0.5,
        alpha_p: float = 0.5,
        eps: float = 1e-6,
        cls: str = "cls",
        dom: str = "dom",
        modulation: Modulation = "decoupled",
        projection: Projection = "adaptive",
        coefficient: CoefficientForm = "published",
    ) -> None:
        super().__init__()
        self.alpha_k: float = check("alpha_k", alpha_k, "float", low=0.0)
        self.alpha_p: float = check("alpha_p", alpha_p, "float", low=0.0)
        self.eps: float = check("eps", eps, "float", low=0.0)
        self.modulation: Modulation = check("modulation", modulation, "str", options=_MODULATIONS)
        self.projection: Projection = check("projection", projection, "str", options=_PROJECTIONS)
        self.coefficient: CoefficientForm = check(
            "coefficient", coefficient, "str", options=("published", "continuous")
        )
        self.cls: str = check("cls", cls, "str")
        self.dom: str = check("dom", dom, "str")
        if cls == dom:
            raise ValueError(f"cls and dom must be different objective names, got {cls!r} twice")

    def _check_table(self, table: GradientTable) -> bool:
        unknown = [o for o in table.objectives if o not in (self.cls, self.dom)]
        if unknown or self.cls not in table.objectives:
            raise ValueError(
                f"GMP expects objectives {self.cls!r} and (optionally, for one source domain) "
                f"{self.dom!r}; got {list(table.objectives)}"
                + (f" (unknown: {unknown})" if unknown else "")
            )
        has_dom = self.dom in table.objectives
        for name, block in table.blocks.items():
            for objective, reached in zip(table.objectives, block.reached):
                if not reached:
                    raise ValueError(
                        f"GMP: objective {objective!r} does not reach block {name!r}; each "
                        "modality block needs both its classification and domain gradients"
                    )
        return has_dom

    def _modulation(self, q: Any, c: Any) -> tuple[Any, Any, Any, Any]:
        """IGDM (Eqs. 8–10) on ``(M,)`` confidences: ``(rho, sigma, k, p)``, each ``(M,)``
        (NumPy arrays or tensors, as ``q``). ``c`` is None without a domain objective
        (σ = 1, p = 1); one modality gives ρ = σ = 1."""
        xp = namespace(q)
        rho = ratio_vector(q, eps=self.eps)
        ones = xp.ones_like(q)
        sigma = ratio_vector(c, eps=self.eps, inverse=True) if c is not None else ones
        k = coefficient_vector(rho, self.alpha_k, self.coefficient)
        p = coefficient_vector(sigma, self.alpha_p, self.coefficient) if c is not None else ones
        if self.modulation == "unified":
            p = k
        elif self.modulation == "without_k":
            k = ones
        elif self.modulation == "without_p":
            p = ones
        elif self.modulation == "none":
            k = p = ones
        return rho, sigma, k, p

    def _confidences(
        self, table: GradientTable, signals: SignalMap | None, device: torch.device | None
    ) -> tuple[Any, Any, torch.Tensor | None]:
        """``(q, c, valid)``: the signals as ``(M,)`` float64 arrays — NumPy on the host
        (``device`` None; invalid values raise), torch tensors on ``device`` (invalid values
        give ``valid = False``). One modality has no signals: ``q`` is ones, ``c`` None."""
        has_dom = self._check_table(table)
        names = list(table.blocks)
        if len(names) == 1:
            if device is None:
                return np.ones(1), None, None
            return torch.ones(1, dtype=torch.float64, device=device), None, None
        wanted = [(self.cls, "semantic confidence")]
        if has_dom:
            wanted.append((self.dom, "domain confidence"))
        columns: list[Any] = []
        flags: list[torch.Tensor] = []
        for objective, what in wanted:
            if device is None:
                values = [
                    require_signal(signals, m, objective, what, low=0.0, high=1.0) for m in names
                ]
                columns.append(np.array(values, dtype=np.float64))
                continue
            read = [
                signal_on_device(signals, m, objective, what, device, low=0.0, high=1.0)
                for m in names
            ]
            columns.append(torch.stack([value for value, _ in read]))
            flags += [ok for _, ok in read]
        valid = torch.stack(flags).all() if flags else None
        return columns[0], (columns[1] if has_dom else None), valid

    def states(self, table: GradientTable, signals: SignalMap | None) -> dict[str, GMPBlockState]:
        """IGDM: ρ, σ, k and p of every modality block (Eqs. 8–10)."""
        q, c, _ = self._confidences(table, signals, None)
        rho, sigma, k, p = self._modulation(q, c)
        return {
            m: GMPBlockState(rho=float(rho[i]), sigma=float(sigma[i]), k=float(k[i]), p=float(p[i]))
            for i, m in enumerate(table.blocks)
        }

    def decide(self, table: GradientTable, signals: SignalMap | None) -> dict[str, Decision]:
        host = table.synchronous
        device = table.decision_device
        q, c, valid = self._confidences(table, signals, None if host else device)
        xp = namespace(q)
        multi = len(table.blocks) > 1
        rho, sigma, k, p = self._modulation(q, c)
        positive = sigma > 0
        gamma = xp.where(positive, rho / xp.where(positive, sigma, 1.0), math.inf)
        i_c = table.index(self.cls)
        i_d = table.index(self.dom) if self.dom in table.objectives else None
        out = {}
        for i, (name, block) in enumerate(table.blocks.items()):
            weights: Any = np.zeros(table.k)
            projected: Any = np.zeros(table.k, dtype=bool)
            if not host:
                weights = torch.zeros(table.k, dtype=torch.float64, device=device)
                projected = torch.zeros(table.k, dtype=torch.bool, device=device)
            details: dict[str, Any] = {
                "rho": rho[i],
                "sigma": sigma[i],
                "k": k[i],
                "p": p[i],
                "gamma": gamma[i],
            }
            if i_d is None:
                weights[i_c] = k[i]
                details.update(cosine=None, conflict=False)
            else:
                gram = block.gramian.to(torch.float64)
                g: Any = gram.numpy() if host else gram  # entries by integer index
                pair = xp.stack(
                    [xp.stack([g[i_c, i_c], g[i_c, i_d]]), xp.stack([g[i_d, i_c], g[i_d, i_d]])]
                )
                w, flags, conflict = gmp_block_weights(pair, k[i], p[i], gamma[i], self.projection)
                weights[i_c], weights[i_d] = w[0], w[1]
                projected[i_c], projected[i_d] = flags[0], flags[1]
                details.update(cosine=_pair_cosine(pair), conflict=conflict)
            if host:
                details = {
                    key: (value.item() if isinstance(value, np.generic) else value)
                    for key, value in details.items()
                }
                task = None
                if i_d is not None:
                    hit = [t for t, f in zip(("cls", "dom"), (projected[i_c], projected[i_d])) if f]
                    task = "both" if len(hit) == 2 else hit[0] if hit else None
                details["projected_task"] = task
                details["semantic_confidence"] = _get(signals, name, self.cls)
                details["domain_confidence"] = _get(signals, name, self.dom)
                names = tuple(o for o, f in zip(table.objectives, projected.tolist()) if f)
                out[name] = Decision(torch.from_numpy(weights), projected=names, details=details)
            else:
                if multi:
                    details["semantic_confidence"] = q[i]
                    if c is not None:
                        details["domain_confidence"] = c[i]
                out[name] = Decision(weights, projected=projected, details=details, valid=valid)
        return out


def _get(signals: SignalMap | None, block: str, objective: str) -> float | None:
    try:
        value = signals[block][objective]  # type: ignore[index]
    except (KeyError, TypeError):
        return None
    return float(value)
