"""OGM-GE: on-the-fly gradient modulation with generalization enhancement."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from ..core.checks import check
from ..core.families import CrossBlockMethod
from ..core.gramian import combine
from ..core.method import Decision, Kind
from ..core.rng import SeededGenerator
from ..core.signals import SignalMap, require_signal, signal_on_device
from ..core.table import BlockGradients, GradientTable
from ..registry import register
from ..solvers.modulation import CoefficientForm, coefficient_vector, ratio_vector

__all__ = ["OGMGE"]


@register
class OGMGE(CrossBlockMethod):
    r"""OGM-GE (Peng, Wei, Deng, Wang, Hu; CVPR 2022, "Balanced Multimodal Learning via
    On-the-fly Gradient Modulation").

    Blocks are modality encoders; there is one objective (the fused loss); the signal of a
    block is its semantic confidence ``s̄^u`` (batch-mean true-class probability of the
    modality's own logits, see `gradsurgery.signals`). The discrepancy ratio of
    modality ``u`` against the other ``ū`` is ``ρ^u = s̄^u / s̄^{ū}`` and the dominant
    modality's gradient is scaled by

    $$k^u = \begin{cases} 1 - \tanh(\alpha\,\rho^u) & \rho^u > 1 \\ 1 & \text{otherwise}
      \end{cases}$$

    (the published form and current official code; ``coefficient="continuous"`` selects the
    pre-2022 code's ``1 − tanh(α·relu(ρ − 1))``). **Generalization Enhancement** (``ge``)
    then adds Gaussian noise to every parameter tensor of every modality block,
    ``g ← k·g + ε``, ``ε ~ N(0, std(g)²)`` with ``std`` the element standard deviation of that
    tensor's unmodulated gradient, drawn from the method's own seedable generator.

    Modulation is active while ``start_epoch ≤ epoch ≤ end_epoch`` (inclusive; call
    `set_epoch`) and, if given, ``start_step ≤ step ≤ end_step`` (the step counter
    advances on every call); outside the window gradients are untouched.

    Deliberate deviations from the official code:

    * The block is what you name: the official code modulates only 4-D convolution kernels of
      encoders found by parameter name. Put exactly the parameters you want in each block.
    * ``M > 2`` modalities: ``ū`` is the mean over the other modalities (as in GMP).
    * ``eps`` (default ``1e-8``) is added to the ratio's denominator (the official code has
      none); the noise std has no ``+1e-8`` so that a zero gradient stays zero, and a
      one-element tensor has std 0 (PyTorch's unbiased std would be NaN).
    * Noise is drawn on the block's device: on the CPU from the method's generator, elsewhere
      from a device generator re-seeded from it at every step, so a seed fixes the noise for
      a given device type (CPU and CUDA draws differ).

    Scale: at equal confidences (``ρ = 1``) and without GE the update is the gradient itself.

    Decides on the device: ``sync=False`` keeps the step free of host synchronisation (see
    the On-device step page).

    Args:
        alpha: Modulation strength (official default setting 0.1; 0.8 recommended for
            CREMA-D).
        ge: Add the Generalization Enhancement noise.
        coefficient: ``"published"`` or ``"continuous"``.
        start_epoch: First epoch of the modulation window.
        end_epoch: Last epoch of the window (official default 50); ``None`` for no end.
        start_step: First step of the window (``None``: no step condition).
        end_step: Last step of the window (``None``: no end).
        eps: Added to the ratio's denominator.
        seed: Seed of the noise generator (used when ``generator`` is None).
        generator: A CPU ``torch.Generator`` for the noise.

    Report details per modality: ``rho``, ``k``, ``active`` (inside the window),
    ``noise_std`` (per tensor, when GE adds noise).
    """

    name = "ogmge"
    kinds: ClassVar[frozenset[Kind]] = frozenset({"multimodal"})
    max_objectives = 1
    needs_signals = ("semantic confidence per modality block, for the fused objective",)
    stateful = True
    on_device = True
    needs_rows = True  # GE noise uses each tensor's gradient std

    def __init__(
        self,
        *,
        alpha: float = 0.1,
        ge: bool = True,
        coefficient: CoefficientForm = "published",
        start_epoch: int = 0,
        end_epoch: int | None = 50,
        start_step: int | None = None,
        end_step: int | None = None,
        eps: float = 1e-8,
        seed: int = 0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.alpha: float = check("alpha", alpha, "float", low=0.0)
        self.ge: bool = check("ge", ge, "bool")
        self.coefficient: CoefficientForm = check(
            "coefficient", coefficient, "str", options=("published", "continuous")
        )
        self.start_epoch: int = check("start_epoch", start_epoch, "int", low=0)
        self.end_epoch: int | None = check("end_epoch", end_epoch, "int", optional=True)
        self.start_step: int | None = check("start_step", start_step, "int", optional=True)
        self.end_step: int | None = check("end_step", end_step, "int", optional=True)
        if end_epoch is not None and end_epoch < start_epoch:
            raise ValueError(f"end_epoch ({end_epoch}) is before start_epoch ({start_epoch})")
        if end_step is not None and start_step is not None and end_step < start_step:
            raise ValueError(f"end_step ({end_step}) is before start_step ({start_step})")
        self.eps: float = check("eps", eps, "float", low=0.0)
        self.seed: int = check("seed", seed, "int")
        self._rng = SeededGenerator(seed, generator)
        self.epoch = 0
        self.step = 0

    def set_epoch(self, epoch: int) -> None:
        """Tell the method the current epoch (for the modulation window)."""
        self.epoch = int(epoch)

    @property
    def active(self) -> bool:
        """Whether the current epoch and step are inside the modulation window."""
        in_epoch = self.start_epoch <= self.epoch and (
            self.end_epoch is None or self.epoch <= self.end_epoch
        )
        in_step = (self.start_step is None or self.start_step <= self.step) and (
            self.end_step is None or self.step <= self.end_step
        )
        return in_epoch and in_step

    def decide(self, table: GradientTable, signals: SignalMap | None) -> dict[str, Decision]:
        objective = table.objectives[0]
        names = list(table.blocks)
        active = self.active
        self.step += 1
        host = table.synchronous
        device = table.decision_device
        valid = None
        if len(names) > 1:
            what = "semantic confidence"
            if host:
                values = [
                    require_signal(signals, m, objective, what, low=0.0, high=1.0) for m in names
                ]
                scores: Any = np.array(values, dtype=np.float64)  # NumPy on the host
            else:
                read = [
                    signal_on_device(signals, m, objective, what, device, low=0.0, high=1.0)
                    for m in names
                ]
                scores = torch.stack([value for value, _ in read])
                valid = torch.stack([ok for _, ok in read]).all()
            rho = ratio_vector(scores, eps=self.eps)
        else:
            rho = np.ones(1) if host else torch.ones(1, dtype=torch.float64, device=device)
        k = coefficient_vector(rho, self.alpha, self.coefficient) if active else rho * 0 + 1
        out = {}
        for i, m in enumerate(names):
            details: dict[str, Any] = {"rho": rho[i], "k": k[i], "active": active}
            if host:
                details.update(rho=float(rho[i]), k=float(k[i]))
                out[m] = Decision(torch.from_numpy(k[i : i + 1].copy()), details=details)
            else:
                out[m] = Decision(k[i : i + 1].clone(), details=details, valid=valid)
        return out

    def update(self, block: BlockGradients, decision: Decision) -> torch.Tensor:
        """The modulated gradient, plus the Generalization Enhancement noise when active."""
        update = combine(decision.weights, block.matrix)
        if not (self.ge and decision.details["active"]):
            return update
        stds: list[float | torch.Tensor] = []
        host = block.policy.synchronizes
        for part, grad in zip(block.split(update), block.split(block.matrix[0])):
            work = grad if grad.dtype == torch.float64 else grad.float()
            noise = self._rng.randn_like(part)
            if host:
                std = float(work.std()) if grad.numel() > 1 else 0.0
                part.add_(noise.to(part.dtype), alpha=std)
                stds.append(std)
            else:  # the same, with the deviation kept on the device
                std_t = work.std() if grad.numel() > 1 else work.new_zeros(())
                part.add_(noise.to(part.dtype) * std_t.to(part.dtype))
                stds.append(std_t)
        decision.details["noise_std"] = stds
        decision.linear = False
        return update

    def reset(self) -> None:
        super().reset()
        self._rng.reset()
        self.epoch = 0
        self.step = 0

    def _get_state(self) -> dict[str, Any]:
        return {**self._rng.state(), "epoch": self.epoch, "step": self.step}

    def _set_state(self, state: Mapping[str, Any]) -> None:
        self._rng.load(state)
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
