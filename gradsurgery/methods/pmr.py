"""PMR: prototypical modal rebalance (Fan, Xu, Wang, Wang, Guo; CVPR 2023)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from ..core.checks import check
from ..core.families import CrossBlockMethod
from ..core.method import Decision, Kind, copy_decision
from ..core.signals import SignalError, SignalMap, require_signal
from ..core.table import GradientTable
from ..registry import register
from ..solvers.modulation import discrepancy_ratios

__all__ = ["PMR", "pmr_weaker"]


def pmr_weaker(confidences: Mapping[str, float]) -> tuple[list[str], dict[str, float]]:
    """The modalities PMR stimulates: those less confident than the mean of the others.

    ``ρ_m = p̄^m / mean_{n≠m} p̄^n``; modality ``m`` is weaker when ``ρ_m < 1``. For two
    modalities this is the official rule (``ρ = Σp^a / Σp^v``: ``ρ > 1`` stimulates ``v``,
    ``ρ < 1`` stimulates ``a``, a tie neither); one modality is never weaker.

    Returns:
        ``(weaker, ratios)``.
    """
    ratios = discrepancy_ratios(confidences) if confidences else {}
    return [m for m in confidences if ratios[m] < 1.0], ratios


@register
class PMR(CrossBlockMethod):
    r"""PMR (Y. Fan, W. Xu, H. Wang, J. Wang, S. Guo; CVPR 2023, "PMR: Prototypical Modal
    Rebalance for Multimodal Learning").

    Objectives: the fused loss ``L_mm`` and, per modality ``m``, the prototypical
    cross-entropy ``PCE_m = CE(−dist(φ^m(x), c^m), y)`` against the modality's class
    prototypes ``c^m`` (constants, so ``PCE_m`` reaches only encoder ``m``; see
    `gradsurgery.signals.class_prototypes` and `gradsurgery.signals.prototype_logits`).
    Signals: ``signals[m][PCE_m]`` = the batch-mean prototype confidence
    ``p̄^m = mean_i softmax_k(−‖φ^m(x_i) − c_k^m‖)_{y_i}``
    (`gradsurgery.signals.prototype_confidences`); the objective named with the signal is
    modality ``m``'s prototypical loss. ``m`` is any name; blocks are free (usually the
    encoders).

    With ``ρ_m = p̄^m / \operatorname{mean}_{n≠m} p̄^n`` (two modalities:
    ``ρ = Σ_i p_i^a / Σ_i p_i^v``), only the weaker modality gets its prototype term:

    $$L = L_{mm} + \sum_m \beta_m\, \mathrm{PCE}_m, \qquad
      \beta_m = \begin{cases}\alpha & \rho_m < 1 \\ 0 & \text{otherwise}\end{cases}$$

    i.e. row weights 1 for ``L_mm`` (and every objective without a signal) and ``β_m`` for
    ``PCE_m``, the same on every block. Active while ``start_epoch ≤ epoch ≤ end_epoch``
    (call `set_epoch`); outside, every ``β_m = 0`` (the official code drops the prototype
    terms there).

    Deliberate choices (spec §6.3, §7):

    * **Coefficients.** The official script's binary switch (``α`` or 0); whether the paper
      defines a coefficient continuous in ``ρ`` was not verified, so none is offered.
    * **Entropy regulariser.** The paper's prototype-entropy term for the dominant modality
      early in training is not in the official script and is not implemented.
    * **More than two modalities**: weaker = confidence below the mean of the others (a
      generalisation; BalanceBenchmark does not run PMR for ``M > 2``). One modality: no
      prototype term. A tie: none.
    * Prototypes (and their momentum ``μ``, official 0.2) live in the signal helpers, not
      in the method.

    Scale: outside the scale convention by construction: a ``PCE`` row gets weight 0 or
    ``α``, so ``k`` identical rows give ``(k − #PCE + α·#weaker)·g``.

    State: the epoch.

    Args:
        alpha: Weight ``α`` of the weaker modality's prototype loss (official default 1.0;
            BalanceBenchmark 0.6).
        start_epoch: First epoch of the window (official default 0).
        end_epoch: Last epoch of the window (official default 100; ``None``: no end).

    Report details (every block): ``confidence`` and ``ratio`` per modality, ``weaker``
    (the stimulated modalities), ``prototype_objectives`` (modality → objective) and
    ``active``.
    """

    name = "pmr"
    kinds: ClassVar[frozenset[Kind]] = frozenset({"multimodal"})
    needs_signals = (
        "prototype confidence per modality (batch mean, in [0, 1]), given under the name of "
        "that modality's prototypical cross-entropy objective",
    )
    stateful = True

    def __init__(
        self, *, alpha: float = 1.0, start_epoch: int = 0, end_epoch: int | None = 100
    ) -> None:
        super().__init__()
        self.alpha: float = check("alpha", alpha, "float", low=0.0)
        self.start_epoch: int = check("start_epoch", start_epoch, "int", low=0)
        self.end_epoch: int | None = check("end_epoch", end_epoch, "int", optional=True)
        if end_epoch is not None and end_epoch < start_epoch:
            raise ValueError(f"end_epoch ({end_epoch}) is before start_epoch ({start_epoch})")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Tell the method the current epoch (for the modulation window)."""
        self.epoch = int(epoch)

    @property
    def active(self) -> bool:
        """Whether the current epoch is inside the window."""
        return self.start_epoch <= self.epoch and (
            self.end_epoch is None or self.epoch <= self.end_epoch
        )

    def prototype_objectives(
        self, table: GradientTable, signals: SignalMap | None
    ) -> dict[str, str]:
        """Modality → its prototypical objective, read from the signals' keys."""
        if signals is None:
            raise SignalError(
                "PMR needs signals: {modality: {prototype objective: confidence}}; see "
                "gradsurgery.signals.prototype_confidences"
            )
        out: dict[str, str] = {}
        owner: dict[str, str] = {}
        for m, per in signals.items():
            if len(per) != 1:
                raise SignalError(
                    f"PMR: signals[{m!r}] must hold exactly one entry (the modality's "
                    f"prototype objective), got {sorted(per)}"
                )
            (objective,) = per
            if objective not in table.objectives:
                raise SignalError(
                    f"PMR: signals[{m!r}] names objective {objective!r}, which is not among "
                    f"the objectives {list(table.objectives)}"
                )
            if objective in owner:
                raise SignalError(
                    f"PMR: objective {objective!r} is the prototype loss of both "
                    f"{owner[objective]!r} and {m!r}"
                )
            owner[objective] = m
            out[m] = objective
        return out

    def decide(self, table: GradientTable, signals: SignalMap | None) -> dict[str, Decision]:
        objectives = self.prototype_objectives(table, signals)
        confidences = {
            m: require_signal(signals, m, o, "prototype confidence", low=0.0, high=1.0)
            for m, o in objectives.items()
        }
        weaker, ratios = pmr_weaker(confidences)
        active = self.active
        weights = torch.ones(table.k, dtype=torch.float64)
        for m, objective in objectives.items():
            stimulated = active and m in weaker
            weights[table.index(objective)] = self.alpha if stimulated else 0.0
        details: dict[str, Any] = {
            "confidence": confidences,
            "ratio": ratios,
            "weaker": weaker,
            "prototype_objectives": objectives,
            "active": active,
        }
        shared = Decision(weights, details=details)
        return {name: copy_decision(shared) for name in table.blocks}

    def reset(self) -> None:
        super().reset()
        self.epoch = 0

    def _get_state(self) -> dict[str, Any]:
        return {"epoch": self.epoch}

    def _set_state(self, state: Mapping[str, Any]) -> None:
        self.epoch = int(state["epoch"])
