"""GMP: Gradient Modulation and Projection for multimodal domain generalization."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from ..core.checks import check
from ..core.families import CrossBlockMethod
from ..core.gramian import cosines
from ..core.method import Decision, Kind
from ..core.signals import SignalMap, require_signal
from ..core.table import GradientTable
from ..registry import register
from ..solvers.modulation import CoefficientForm, discrepancy_ratios, modulation_coefficient
from ..solvers.projection import dot, reject

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


def _which_to_project(gamma: float, projection: Projection) -> tuple[str, ...]:
    """The task(s) whose gradient CAGP (or an ablation) projects, given a conflict."""
    if projection == "adaptive":  # project the relatively stronger task; tie → cls
        return ("cls",) if gamma >= 1 else ("dom",)
    if projection == "reverse":  # protect the stronger task instead
        return ("dom",) if gamma >= 1 else ("cls",)
    if projection == "always_cls":
        return ("cls",)
    if projection == "always_dom":
        return ("dom",)
    if projection == "symmetric":
        return ("cls", "dom")
    return ()


def gmp_block_weights(
    gramian: torch.Tensor, state: GMPBlockState, projection: Projection = "adaptive"
) -> tuple[torch.Tensor, tuple[str, ...], bool]:
    """CAGP on one modality, in the coefficient space of its two rows ``(g_c, g_d)``.

    ``ĝ_c = k·g_c`` and ``ĝ_d = p·g_d`` (Eq. 11). If ``ĝ_c·ĝ_d < 0`` the chosen gradient is
    projected onto the normal plane of the other (Eqs. 12–15); the symmetric ablation
    projects both, each against the other's unprojected version.

    Args:
        gramian: ``2 x 2`` Gramian of ``(g_c, g_d)``.
        state: The modality's ρ, σ, k, p.
        projection: ``"adaptive"`` (CAGP) or an ablation.

    Returns:
        ``(weights, projected, conflict)``: weights over ``(g_c, g_d)``, the projected tasks
        and whether the modulated gradients conflicted.
    """
    g_c = torch.tensor([state.k, 0.0], dtype=torch.float64)
    g_d = torch.tensor([0.0, state.p], dtype=torch.float64)
    conflict = bool(dot(g_c, g_d, gramian) < 0)
    projected = _which_to_project(state.gamma, projection) if conflict else ()
    new_c = reject(g_c, g_d, gramian) if "cls" in projected else g_c
    new_d = reject(g_d, g_c, gramian) if "dom" in projected else g_d
    return new_c + new_d, projected, conflict


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

    def states(self, table: GradientTable, signals: SignalMap | None) -> dict[str, GMPBlockState]:
        """IGDM: ρ, σ, k and p of every modality block (Eqs. 8–10)."""
        has_dom = self._check_table(table)
        names = list(table.blocks)
        multi = len(names) > 1
        q = {
            m: require_signal(signals, m, self.cls, "semantic confidence", low=0.0, high=1.0)
            for m in names
            if multi
        }
        c = {
            m: require_signal(signals, m, self.dom, "domain confidence", low=0.0, high=1.0)
            for m in names
            if multi and has_dom
        }
        rho = discrepancy_ratios(q, eps=self.eps) if multi else {names[0]: 1.0}
        sigma = (
            discrepancy_ratios(c, eps=self.eps, inverse=True) if c else dict.fromkeys(names, 1.0)
        )
        out = {}
        for m in names:
            k = modulation_coefficient(rho[m], self.alpha_k, self.coefficient)
            p = modulation_coefficient(sigma[m], self.alpha_p, self.coefficient) if c else 1.0
            if self.modulation == "unified":
                p = k
            elif self.modulation == "without_k":
                k = 1.0
            elif self.modulation == "without_p":
                p = 1.0
            elif self.modulation == "none":
                k = p = 1.0
            out[m] = GMPBlockState(rho=rho[m], sigma=sigma[m], k=k, p=p)
        return out

    def decide(self, table: GradientTable, signals: SignalMap | None) -> dict[str, Decision]:
        states = self.states(table, signals)
        has_dom = self.dom in table.objectives
        i_c = table.index(self.cls)
        i_d = table.index(self.dom) if has_dom else None
        out = {}
        for name, block in table.blocks.items():
            state = states[name]
            weights = torch.zeros(len(table.objectives), dtype=torch.float64)
            gram = block.gramian
            details: dict[str, Any] = {
                "rho": state.rho,
                "sigma": state.sigma,
                "k": state.k,
                "p": state.p,
                "gamma": state.gamma,
                "semantic_confidence": _get(signals, name, self.cls),
                "domain_confidence": _get(signals, name, self.dom),
            }
            if i_d is None:
                weights[i_c] = state.k
                details.update(cosine=None, conflict=False, projected_task=None)
                out[name] = Decision(weights, details=details)
                continue
            idx = [i_c, i_d]
            pair = gram[idx][:, idx]
            w, projected, conflict = gmp_block_weights(pair, state, self.projection)
            weights[i_c], weights[i_d] = w[0], w[1]
            details.update(
                cosine=float(cosines(pair)[0, 1]),
                conflict=conflict,
                projected_task="both" if len(projected) == 2 else (projected or (None,))[0],
            )
            objective_of = {"cls": self.cls, "dom": self.dom}
            out[name] = Decision(
                weights, projected=tuple(objective_of[t] for t in projected), details=details
            )
        return out


def _get(signals: SignalMap | None, block: str, objective: str) -> float | None:
    try:
        value = signals[block][objective]  # type: ignore[index]
    except (KeyError, TypeError):
        return None
    return float(value)
