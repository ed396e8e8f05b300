"""Per-objective state of the loss-based methods: learned vectors with their own optimizer.

Learned-weight methods (uncertainty weighting, IMTL-L, GradNorm, FAMO) keep a ``(k,)``
float64 vector that they train themselves, with an explicit SGD or Adam step whose moments
live in the method's ``state_dict``. Every per-objective vector is bound to the objectives'
*names*: when a later step lists the same objectives in another order, the state follows
the names (`reorder`), so a method is equivariant to the order of the rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch

from ..core.table import GradientTable

__all__ = [
    "ADAM_BETAS",
    "ADAM_EPS",
    "LearnedVector",
    "Optimizer",
    "checked_losses",
    "reorder",
]

Optimizer = Literal["sgd", "adam"]

#: Adam's moment decay rates and denominator term (``torch.optim.Adam``'s defaults).
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def reorder(
    saved: tuple[str, ...] | None, current: tuple[str, ...], owner: str
) -> list[int] | None:
    """Indices that put per-objective state saved in the order ``saved`` into ``current``.

    Args:
        saved: The objectives the state was saved for (``None``: no state yet).
        current: The objectives of this step, in row order.
        owner: The method's class name, for the error message.

    Returns:
        ``None`` when there is nothing to move (no state yet, or the same order), else the
        list ``idx`` with ``state[idx]`` in the order of ``current``.

    Raises:
        ValueError: If the objectives differ from those the state was built for.
    """
    if saved is None or saved == current:
        return None
    if sorted(saved) != sorted(current):
        raise ValueError(
            f"{owner} keeps state for objectives {list(saved)} but was called with "
            f"{list(current)}; call reset() to start again with other objectives"
        )
    position = {name: i for i, name in enumerate(saved)}
    return [position[name] for name in current]


def checked_losses(table: GradientTable, owner: str) -> torch.Tensor:
    """The table's loss values as a float64 CPU tensor, checked finite and non-negative.

    Raises:
        ValueError: If the table has no loss values, or one is NaN, infinite or negative.
    """
    if table.losses is None:
        raise ValueError(f"{owner} reads the objectives' loss values, but the table has none")
    losses = table.losses.to(device="cpu", dtype=torch.float64)
    bad = [o for o, v in zip(table.objectives, losses.tolist()) if not math.isfinite(v) or v < 0]
    if bad:
        values = {o: table.loss(o) for o in bad}
        raise ValueError(
            f"{owner} needs finite, non-negative loss values; got {values} (the method takes "
            "ratios or logarithms of the losses)"
        )
    return losses


def _adam(
    param: torch.Tensor,
    grad: torch.Tensor,
    state: dict[str, Any],
    lr: float,
    weight_decay: float,
) -> torch.Tensor:
    """One step of ``torch.optim.Adam`` (L2 weight decay added to the gradient, no AMSGrad)."""
    beta1, beta2 = ADAM_BETAS
    if weight_decay:
        grad = grad + weight_decay * param
    step = int(state.get("step", 0)) + 1
    m: torch.Tensor = state.get("exp_avg", torch.zeros_like(param)) * beta1 + (1 - beta1) * grad
    v: torch.Tensor = (
        state.get("exp_avg_sq", torch.zeros_like(param)) * beta2 + (1 - beta2) * grad * grad
    )
    state.update(step=step, exp_avg=m, exp_avg_sq=v)
    correction1 = 1 - beta1**step
    correction2 = 1 - beta2**step
    denom = v.sqrt() / math.sqrt(correction2) + ADAM_EPS
    return param - (lr / correction1) * m / denom


class LearnedVector:
    """A learned ``(k,)`` float64 vector, one entry per objective, with its own optimizer.

    The vector starts at ``init`` for every objective on first use (`bind`). `step` applies
    one SGD step ``x ← x − lr·g`` or one Adam step (``torch.optim.Adam``'s update with
    ``betas = (0.9, 0.999)``, ``eps = 1e-8`` and L2 ``weight_decay``); with ``max_norm`` the
    gradient is first clipped to that Euclidean norm (``clip_grad_norm_``'s rule).

    Args:
        init: Initial value of every entry.
        optimizer: ``"sgd"`` or ``"adam"``.
        lr: Learning rate.
        weight_decay: L2 penalty added to the gradient.
        max_norm: Clip the gradient to this norm first (``None``: no clipping).
    """

    def __init__(
        self,
        init: float,
        optimizer: Optimizer,
        lr: float,
        *,
        weight_decay: float = 0.0,
        max_norm: float | None = None,
    ) -> None:
        self.init = init
        self.optimizer = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_norm = max_norm
        self.names: tuple[str, ...] | None = None
        self.value = torch.zeros(0, dtype=torch.float64)
        self.moments: dict[str, Any] = {}

    def bind(self, objectives: tuple[str, ...], owner: str) -> list[int] | None:
        """Create the vector for these objectives, or reorder it (and its moments) to them.

        Returns:
            The reordering applied (see `reorder`), for the caller's own vectors.
        """
        if self.names is None:
            self.names = objectives
            self.value = torch.full((len(objectives),), self.init, dtype=torch.float64)
            return None
        order = reorder(self.names, objectives, owner)
        if order is not None:
            self.value = self.value[order]
            for key in ("exp_avg", "exp_avg_sq"):
                if key in self.moments:
                    self.moments[key] = self.moments[key][order]
            self.names = objectives
        return order

    def step(self, grad: torch.Tensor) -> torch.Tensor:
        """Apply one optimizer step with this gradient; return the gradient used (clipped)."""
        if self.max_norm is not None:
            norm = float(grad.norm())
            grad = grad * min(1.0, self.max_norm / (norm + 1e-6))
        if self.optimizer == "sgd":
            self.value = self.value - self.lr * (grad + self.weight_decay * self.value)
        else:
            self.value = _adam(self.value, grad, self.moments, self.lr, self.weight_decay)
        return grad

    def reset(self) -> None:
        """Forget the vector and its moments (the next `bind` starts at ``init``)."""
        self.names = None
        self.value = torch.zeros(0, dtype=torch.float64)
        self.moments = {}

    def state(self) -> dict[str, Any]:
        """The vector, its objectives and the optimizer moments, as plain data."""
        return {
            "names": None if self.names is None else list(self.names),
            "value": self.value.clone(),
            "moments": {
                k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in self.moments.items()
            },
        }

    def load(self, state: Mapping[str, Any]) -> None:
        """Restore what `state` returned."""
        names = state["names"]
        self.names = None if names is None else tuple(str(n) for n in names)
        self.value = torch.as_tensor(state["value"], dtype=torch.float64).clone()
        self.moments = {
            k: v.clone() if isinstance(v, torch.Tensor) else int(v)
            for k, v in dict(state["moments"]).items()
        }
