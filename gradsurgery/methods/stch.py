"""STCH: smooth Tchebycheff scalarization (Lin et al.; ICML 2024)."""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any, Literal

import torch

from ..core.checks import check
from ..core.families import Context, LossWeighting
from ..core.method import Decision
from ..registry import register
from ..solvers.learned import checked_losses, reorder

__all__ = ["STCH", "stch_weights"]

Normalize = Literal["none", "sum"]

#: Added inside the logarithms, as in the reference recipe.
_LOG_EPS = 1e-20


def stch_weights(losses: torch.Tensor, nadir: torch.Tensor, mu: float) -> torch.Tensor:
    """STCH's row weights at paper scale: ``k·softmax(ℓ/μ)_i / L_i``.

    ``ℓ_i = log(L_i/n_i + 1e-20)``; the exact derivative of ``k μ logsumexp(ℓ/μ)`` in
    ``L_i`` is ``k softmax(ℓ/μ)_i / (L_i + 1e-20 n_i)``.
    """
    nadir = nadir.clamp_min(torch.finfo(torch.float64).tiny)
    ell = torch.log(losses / nadir + _LOG_EPS)
    z = torch.softmax(ell / mu, dim=0)
    return losses.numel() * z / (losses + _LOG_EPS * nadir)


@register
class STCH(LossWeighting):
    r"""STCH, smooth Tchebycheff scalarization (Lin et al.; ICML 2024, "Smooth Tchebycheff
    Scalarization for Multi-Objective Optimization"), with the multi-task recipe of the
    official code and LibMTL.

    The smooth Tchebycheff scalarisation ``g_μ = μ log Σ_i exp(λ_i (f_i − z_i^*)/μ)``
    (``λ = 1``) is applied to normalised log-losses. During ``warmup_epochs`` epochs the
    method minimises ``Σ_i log(L_i + 10^{-20})`` (row weights ``1/L_i``); the losses of the
    last warm-up epoch are averaged into a nadir vector ``n``. Afterwards, with
    ``ℓ_i = log(L_i/n_i + 10^{-20})``, the loss is ``k μ logsumexp(ℓ/μ)``, so

    $$w_i = \frac{k\,\operatorname{softmax}(\ell/\mu)_i}{L_i + 10^{-20} n_i} .$$

    **Scale.** The weights divide by the losses: no constant factor meets the library's
    convention, so the default ``normalize="none"`` keeps the paper's scale. The opt-in
    ``normalize="sum"`` rescales the weights to ``Σ w = k`` (``k`` identical rows then give
    ``k·g``).

    **Epochs.** Call `set_epoch` at each epoch, or give ``epoch_length=n`` (every ``n``
    calls make an epoch). Epochs ``0 … warmup_epochs − 1`` are the warm-up; the nadir is
    formed at the first call after it. With ``warmup_epochs=0`` (or no call in the last
    warm-up epoch) the nadir is the losses of the first call after the warm-up.

    Defaults: ``mu=1`` and ``warmup_epochs=4`` (LibMTL), ``epoch_length=None``,
    ``normalize="none"``.

    Deliberate deviations: a zero nadir entry counts as the smallest positive float;
    negative or non-finite losses raise ``ValueError``. LibMTL counts its warm-up epochs
    with its own epoch counter; here epoch ``warmup_epochs − 1`` (0-based) is the last
    warm-up epoch, the one averaged into the nadir.

    State: the epoch number, the calls in it, the nadir (or the running sums that form it),
    bound to the objectives' names.

    Args:
        mu: Smoothing parameter ``μ``.
        warmup_epochs: Epochs of log-loss warm-up.
        epoch_length: Calls per epoch (``None``: epochs are told with `set_epoch`).
        normalize: ``"none"`` (paper scale) or ``"sum"`` (``Σ w = k``).

    Report details: ``epoch``, ``phase`` (``"warmup"`` or ``"stch"``), ``nadir`` (``None``
    during the warm-up).
    """

    name = "stch"
    stateful = True

    def __init__(
        self,
        *,
        mu: float = 1.0,
        warmup_epochs: int = 4,
        epoch_length: int | None = None,
        normalize: Normalize = "none",
    ) -> None:
        super().__init__()
        self.mu: float = check("mu", mu, "float", low=0.0, low_open=True)
        self.warmup_epochs: int = check("warmup_epochs", warmup_epochs, "int", low=0)
        self.epoch_length: int | None = check(
            "epoch_length", epoch_length, "int", low=1, optional=True
        )
        self.normalize: Normalize = check("normalize", normalize, "str", options=("none", "sum"))
        self._clear()

    def _clear(self) -> None:
        self.epoch = 0
        self._calls = 0
        self._names: tuple[str, ...] | None = None
        self._sums = torch.zeros(0, dtype=torch.float64)
        self._count = 0
        self._nadir: torch.Tensor | None = None

    def set_epoch(self, epoch: int) -> None:
        """Tell the method the current epoch."""
        epoch = operator.index(epoch)
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if epoch != self.epoch:
            self.epoch = epoch
            self._calls = 0

    def weigh_losses(self, context: Context) -> Decision:
        losses = checked_losses(context.table, type(self).__name__)
        order = reorder(self._names, context.objectives, type(self).__name__)
        if order is not None:
            self._sums = self._sums[order]
            if self._nadir is not None:
                self._nadir = self._nadir[order]
        if self._names is None:
            self._sums = torch.zeros_like(losses)
        self._names = context.objectives
        if self.epoch_length is not None and self._calls >= self.epoch_length:
            self.epoch += 1
            self._calls = 0
        self._calls += 1
        if self.epoch < self.warmup_epochs:
            weights = 1.0 / (losses + _LOG_EPS)
            if self.epoch == self.warmup_epochs - 1:
                self._sums = self._sums + losses
                self._count += 1
            phase = "warmup"
        else:
            if self._nadir is None:
                self._nadir = self._sums / self._count if self._count else losses.clone()
            weights = stch_weights(losses, self._nadir, self.mu)
            phase = "stch"
        if self.normalize == "sum":
            weights = len(weights) * weights / weights.sum()
        nadir = None if self._nadir is None else self._nadir.tolist()
        return Decision(weights, details={"epoch": self.epoch, "phase": phase, "nadir": nadir})

    @property
    def nadir(self) -> dict[str, float] | None:
        """The nadir vector per objective (``None`` until the warm-up is over)."""
        if self._nadir is None or self._names is None:
            return None
        return dict(zip(self._names, self._nadir.tolist()))

    def reset(self) -> None:
        super().reset()
        self._clear()

    def _get_state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "calls": self._calls,
            "names": None if self._names is None else list(self._names),
            "sums": self._sums.clone(),
            "count": self._count,
            "nadir": None if self._nadir is None else self._nadir.clone(),
        }

    def _set_state(self, state: Mapping[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self._calls = int(state["calls"])
        names = state["names"]
        self._names = None if names is None else tuple(str(n) for n in names)
        self._sums = torch.as_tensor(state["sums"], dtype=torch.float64).clone()
        self._count = int(state["count"])
        nadir = state["nadir"]
        self._nadir = None if nadir is None else torch.as_tensor(nadir, dtype=torch.float64).clone()
