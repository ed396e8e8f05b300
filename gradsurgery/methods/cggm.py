"""CGGM: classifier-guided gradient modulation (Guo, Jin, Chen, Zhao; NeurIPS 2024)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from ..core.checks import check
from ..core.families import CrossBlockMethod
from ..core.method import Decision, Kind
from ..core.signals import SignalMap, require_signal
from ..core.table import GradientTable
from ..registry import register

__all__ = ["CGGM", "cggm_coefficients"]


def cggm_coefficients(
    deltas: Mapping[str, float],
    *,
    eps: float = 1e-8,
    b_max: float | None = 1.0,
    tau: float = 1e-6,
) -> tuple[dict[str, float], bool]:
    """CGGM's magnitude coefficients ``B_m = (Σ_j Δ_j − Δ_m) / (Σ_j Δ_j + eps)``.

    A modality that improved less than the others gets a larger ``B``.

    Args:
        deltas: ``Δ_m = acc_m(t) − acc_m(t−1)`` per modality (two or more).
        eps: Added to the denominator (official ``1e-8``).
        b_max: Clamp ``B`` to ``[0, b_max]``; ``None`` leaves it unclamped (official).
        tau: When ``|Σ_j Δ_j| < tau`` the step is skipped: every ``B`` is 1 and the flag
            is set; ``0`` never skips (official).

    Returns:
        ``(B, skipped)``.
    """
    total = sum(deltas.values())
    if abs(total) < tau:
        return dict.fromkeys(deltas, 1.0), True
    out = {}
    for m, d in deltas.items():
        b = (total - d) / (total + eps)
        if b_max is not None:
            b = min(max(b, 0.0), b_max) + 0.0  # + 0.0: no negative zero
        out[m] = b
    return out, False


@register
class CGGM(CrossBlockMethod):
    r"""CGGM (Z. Guo, T. Jin, J. Chen, Z. Zhao; NeurIPS 2024, "Classifier-guided Gradient
    Modulation for Enhanced Multimodal Learning").

    Blocks are modality encoders; there is one objective, the fused loss. Each modality has
    an auxiliary classifier on its *detached* features, trained with its own optimiser; the
    signal of block ``m`` (under the fused objective's name) is that classifier's batch
    metric ``acc_m(t)`` (accuracy for classification,
    `gradsurgery.signals.modality_accuracies`; a task metric otherwise). The method keeps
    ``acc_m(t−1)`` (0 at the start) and forms ``Δ_m = acc_m(t) − acc_m(t−1)`` and

    $$B_m = \frac{\sum_j \Delta_j - \Delta_m}{\sum_j \Delta_j + \epsilon},$$

    and encoder ``m``'s update is ``ρ B_m g_m``: the modality that improved least is pushed
    most.

    **Direction term.** CGGM also adds ``λ L_gm`` with
    ``L_gm = (Σ_m |B_m| − Σ_m B_m cos_m)/M`` to the next step's loss. It is a loss on the
    heads, outside a gradient weighting: compute it with
    `gradsurgery.signals.cggm_direction_loss` from this step's ``B`` (report detail ``"B"``)
    and pass it as an ``extra=`` loss of the next `gradsurgery.backward`. The spec marks its
    ``cos_m`` as not reliably specified (the paper speaks of gradient directions); the
    helper follows the official code: the cosine between the output-layer *weights* of
    auxiliary classifier ``m`` and of the fused model.

    Deliberate deviations (spec §6.4 edge cases):

    * **Guard.** A batch metric is noisy: ``Σ Δ`` near 0 or negative makes ``B`` explode or
      change sign (descent turned into ascent on an encoder); the official code has no guard.
      By default ``B`` is clamped to ``[0, b_max]`` (``b_max = 1``: with every ``Δ ≥ 0``,
      ``B`` already lies in ``[0, 1]``) and a step with ``|Σ Δ| < tau`` is skipped (weights
      1, report ``skipped``). ``CGGM(b_max=None, tau=0.0)`` is the official rule.
    * **One block**: there is nothing to compare (the formula gives ``B = 0``); the step
      counts as skipped (weight 1, ``B`` reported as 1) and the previous metric still
      advances.
    * Blocks must keep the same names across steps.

    Scale: outside the scale convention by design: ``ρ·B`` multiplies every encoder
    gradient (with two modalities and both ``Δ > 0``, ``B_a + B_v = 1``). With one block the
    weight is 1.

    State: the previous metrics ``acc(t−1)`` per block and the step count. (The auxiliary
    classifiers, their optimiser and the previous ``L_gm`` belong to your training loop.)

    Args:
        rho: Scale ``ρ`` (official ``rou`` 1.3).
        eps: Added to the denominator of ``B`` (official ``1e-8``).
        b_max: Upper clamp of ``B`` (lower clamp 0); ``None`` for none.
        tau: Skip the modulation when ``|Σ Δ| < tau``; 0 never skips.

    Report details per block: ``metric`` (``acc_m(t)``), ``previous`` (``acc_m(t−1)``),
    ``delta``, ``B``, ``skipped`` and ``step``.
    """

    name = "cggm"
    kinds: ClassVar[frozenset[Kind]] = frozenset({"multimodal"})
    max_objectives = 1
    needs_signals = (
        "batch metric (accuracy) of each modality's auxiliary classifier, per modality "
        "block, for the fused objective",
    )
    stateful = True

    def __init__(
        self,
        *,
        rho: float = 1.3,
        eps: float = 1e-8,
        b_max: float | None = 1.0,
        tau: float = 1e-6,
    ) -> None:
        super().__init__()
        self.rho: float = check("rho", rho, "float", low=0.0)
        self.eps: float = check("eps", eps, "float", low=0.0)
        self.b_max: float | None = check("b_max", b_max, "float", low=0.0, optional=True)
        self.tau: float = check("tau", tau, "float", low=0.0)
        self.step = 0
        self.previous: dict[str, float] = {}

    def decide(self, table: GradientTable, signals: SignalMap | None) -> dict[str, Decision]:
        objective = table.objectives[0]
        names = list(table.blocks)
        if self.previous and set(self.previous) != set(names):
            raise ValueError(
                f"CGGM keeps previous metrics for blocks {sorted(self.previous)}, got blocks "
                f"{sorted(names)}; call reset() to start over with other blocks"
            )
        metrics = {m: require_signal(signals, m, objective, "classifier metric") for m in names}
        previous = {m: self.previous.get(m, 0.0) for m in names}
        deltas = {m: metrics[m] - previous[m] for m in names}
        self.step += 1
        if len(names) >= 2:
            b, skipped = cggm_coefficients(deltas, eps=self.eps, b_max=self.b_max, tau=self.tau)
            weights = {m: 1.0 if skipped else self.rho * b[m] for m in names}
        else:
            b, skipped = dict.fromkeys(names, 1.0), True
            weights = dict.fromkeys(names, 1.0)
        out = {}
        for m in names:
            details: dict[str, Any] = {
                "metric": metrics[m],
                "previous": previous[m],
                "delta": deltas[m],
                "B": b[m],
                "skipped": skipped,
                "step": self.step,
            }
            out[m] = Decision(torch.tensor([weights[m]], dtype=torch.float64), details=details)
        self.previous = metrics
        return out

    def reset(self) -> None:
        super().reset()
        self.step = 0
        self.previous = {}

    def _get_state(self) -> dict[str, Any]:
        return {"step": self.step, "previous": dict(self.previous)}

    def _set_state(self, state: Mapping[str, Any]) -> None:
        self.step = int(state["step"])
        self.previous = {str(m): float(v) for m, v in state["previous"].items()}
