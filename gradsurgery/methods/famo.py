"""FAMO: fast adaptive multitask optimization (Liu et al.; NeurIPS 2023)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..core.checks import check
from ..core.families import Context, LossWeighting
from ..core.method import Decision
from ..registry import register
from ..solvers.learned import LearnedVector, checked_losses

__all__ = ["FAMO", "famo_logit_gradient", "famo_weights"]


def famo_weights(logits: torch.Tensor, losses: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """FAMO's row weights at library scale: ``k (z_i/D_i) / Σ_j (z_j/D_j)``.

    ``z = softmax(ξ)`` and ``D_i = L_i + eps``; these are the weights the gradient of
    ``Σ_i z_i log D_i / c`` puts on ``g_i`` (``c = Σ_j z_j/D_j`` held constant), times ``k``.
    """
    z = torch.softmax(logits, dim=0)
    q = z / (losses + eps)
    return logits.numel() * q / q.sum()


def famo_logit_gradient(
    logits: torch.Tensor, before: torch.Tensor, after: torch.Tensor, eps: float = 1e-8
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradient of the logits from the losses before and after a step.

    ``δ_i = log D_i − log D'_i`` (the decrease of each log-loss) pulled back through the
    softmax: ``J_softmax(ξ)ᵀ δ = z ∘ (δ − (zᵀδ) 1)``.

    Returns:
        ``(gradient, delta)``.
    """
    delta = torch.log(before + eps) - torch.log(after + eps)
    z = torch.softmax(logits, dim=0)
    return z * (delta - (z * delta).sum()), delta


@register
class FAMO(LossWeighting):
    r"""FAMO (Liu et al.; NeurIPS 2023, "FAMO: Fast Adaptive Multitask Optimization").

    Logits ``ξ ∈ R^k`` (start at 0), ``z = softmax(ξ)``, ``D_i = L_i + 10^{-8}``. The
    scalarised loss ``Σ_i z_i log D_i / c`` with ``c = Σ_j z_j/D_j`` held constant gives the
    row weights

    $$w_i = k\,\frac{z_i / D_i}{\sum_j z_j / D_j}$$

    (library scale: the paper's weights sum to 1, times ``k``; ``Σ w = k``). After the
    model step the losses ``D'`` are seen again; with ``δ_i = log D_i − log D'_i`` the logits
    get the gradient ``J_softmax(ξ)ᵀ δ = z ∘ (δ − (zᵀδ)1)``, clipped to norm ``max_norm``,
    and one Adam step (``torch.optim.Adam``'s update, betas ``(0.9, 0.999)``, eps ``1e-8``,
    L2 ``weight_decay``) with learning rate ``lr``.

    **How the method sees the "after" losses.** By default, the *next call's* losses: at
    each call the method first learns from the previous call's losses (before) and this
    call's (after), then weighs this call's rows. That needs no extra forward pass, but the
    two losses come from different batches. To reproduce the official code, recompute the
    losses on the same batch without grad after ``optimizer.step()`` and pass them to
    `update_after`; the next call then does not learn again.

    Defaults: ``lr=0.025`` (paper and official code), ``weight_decay=1e-5`` (official class
    default; LibMTL uses ``1e-3``), ``max_norm=1.0`` (official; ``None`` disables it),
    ``eps=1e-8``.

    Deliberate deviations: the next-call default above; ``L* = 0`` (the official
    ``min_losses`` shift is not offered); negative or non-finite losses raise ``ValueError``.

    State: ``ξ`` and its Adam moments, the losses waiting for their "after" values, bound
    to the objectives' names.

    Args:
        lr: Learning rate of the logits.
        weight_decay: L2 weight decay ``γ`` of the logits.
        max_norm: Clip the logits' gradient to this norm (``None``: no clipping).
        eps: Added to the losses before logs and divisions.

    Report details: ``logits`` (``ξ`` used for this step's weights), ``z``; and when the
    call learned from the previous losses, ``delta`` and ``logit_grad`` (before clipping).
    """

    name = "famo"
    stateful = True

    def __init__(
        self,
        *,
        lr: float = 0.025,
        weight_decay: float = 1e-5,
        max_norm: float | None = 1.0,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        self.lr: float = check("lr", lr, "float", low=0.0)
        self.weight_decay: float = check("weight_decay", weight_decay, "float", low=0.0)
        self.max_norm: float | None = check(
            "max_norm", max_norm, "float", low=0.0, low_open=True, optional=True
        )
        self.eps: float = check("eps", eps, "float", low=0.0, low_open=True)
        self._xi = LearnedVector(
            0.0, "adam", self.lr, weight_decay=self.weight_decay, max_norm=self.max_norm
        )
        self._pending: torch.Tensor | None = None

    def weigh_losses(self, context: Context) -> Decision:
        losses = checked_losses(context.table, type(self).__name__)
        order = self._xi.bind(context.objectives, type(self).__name__)
        if order is not None and self._pending is not None:
            self._pending = self._pending[order]
        learned = self._learn(losses) if self._pending is not None else {}
        logits = self._xi.value
        weights = famo_weights(logits, losses, self.eps)
        self._pending = losses.clone()
        z = torch.softmax(logits, dim=0)
        return Decision(weights, details={"logits": logits.tolist(), "z": z.tolist(), **learned})

    def _learn(self, after: torch.Tensor) -> dict[str, list[float]]:
        before = self._pending if self._pending is not None else after
        grad, delta = famo_logit_gradient(self._xi.value, before, after, self.eps)
        self._xi.step(grad)
        self._pending = None
        return {"delta": delta.tolist(), "logit_grad": grad.tolist()}

    def update_after(
        self,
        losses: Mapping[str, float | torch.Tensor] | Sequence[float | torch.Tensor] | torch.Tensor,
    ) -> dict[str, list[float]]:
        """Learn from the losses recomputed after the model step (the official procedure).

        Call it after ``optimizer.step()`` with the losses of the same batch, computed under
        ``torch.no_grad()``.

        Args:
            losses: ``{objective: loss}``, or the losses in the order of the last call's
                objectives.

        Returns:
            ``delta`` and ``logit_grad`` (before clipping), as in the report's details.

        Raises:
            RuntimeError: If no step is waiting (no call since the last update).
            ValueError: On a wrong number of losses, or a negative or non-finite one.
            KeyError: If the mapping lacks an objective.
        """
        names = self._xi.names
        if self._pending is None or names is None:
            raise RuntimeError(
                "FAMO.update_after: no step is waiting; call the method (or "
                "gradsurgery.backward) first, once per update_after"
            )
        if isinstance(losses, Mapping):
            missing = [n for n in names if n not in losses]
            if missing:
                raise KeyError(f"FAMO.update_after: no loss for objective(s) {missing}")
            values = [float(losses[n]) for n in names]
        elif isinstance(losses, torch.Tensor):
            values = losses.detach().reshape(-1).tolist()
        else:
            values = [float(v) for v in losses]
        if len(values) != len(names):
            raise ValueError(
                f"FAMO.update_after: expected {len(names)} losses for {list(names)}, "
                f"got {len(values)}"
            )
        if not all(math.isfinite(v) and v >= 0 for v in values):
            raise ValueError(f"FAMO needs finite, non-negative loss values; got {values}")
        return self._learn(torch.tensor(values, dtype=torch.float64))

    @property
    def logits(self) -> dict[str, float]:
        """The current ``ξ`` per objective (empty before the first step)."""
        names = self._xi.names or ()
        return dict(zip(names, self._xi.value.tolist()))

    def reset(self) -> None:
        super().reset()
        self._xi.reset()
        self._pending = None

    def _get_state(self) -> dict[str, Any]:
        pending = None if self._pending is None else self._pending.clone()
        return {"logits": self._xi.state(), "pending_losses": pending}

    def _set_state(self, state: Mapping[str, Any]) -> None:
        self._xi.load(state["logits"])
        pending = state["pending_losses"]
        self._pending = (
            None if pending is None else torch.as_tensor(pending, dtype=torch.float64).clone()
        )
