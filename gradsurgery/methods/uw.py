"""Uncertainty weighting (Kendall, Gal & Cipolla; CVPR 2018)."""

from __future__ import annotations

import torch

from ..registry import register
from ._learned_scales import LearnedScales

__all__ = ["UW", "uw_gradient", "uw_weights"]


def uw_weights(log_variances: torch.Tensor) -> torch.Tensor:
    """The library's row weights ``e^{−s_i}`` (twice the paper's ``½e^{−s_i}``)."""
    return torch.exp(-log_variances)


def uw_gradient(log_variances: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    """``∂/∂s_i`` of the paper's loss ``Σ_i ½e^{−s_i}L_i + ½s_i``: ``½(1 − e^{−s_i}L_i)``."""
    return 0.5 * (1.0 - torch.exp(-log_variances) * losses)


@register
class UW(LearnedScales):
    r"""Uncertainty weighting (Kendall, Gal, Cipolla; CVPR 2018, "Multi-Task Learning Using
    Uncertainty to Weigh Losses for Scene Geometry and Semantics").

    Each objective has a learned log-variance ``s_i = log σ_i²``; the paper minimises

    $$\sum_i \tfrac12 e^{-s_i} L_i + \tfrac12 s_i ,$$

    whose gradient in ``s_i`` is ``½(1 − e^{−s_i} L_i)`` (fixed point ``e^{s_i} = L_i``).
    The row weights of the model update are the library's ``w_i = e^{−s_i}``: twice the
    paper's ``½e^{−s_i}``, so that ``s = 0`` gives the plain sum (scale convention: ``k``
    identical rows with any losses give ``k·g`` at initialisation). At the fixed point
    ``w_i = 1/L_i``.

    **How s is learned.** The method holds ``s`` and trains it itself, not through your
    optimizer: every call weighs the rows with the current ``s_t`` and then takes one step
    on ``s`` with the paper's gradient at ``(s_t, L_t)`` — what the references get when the
    model optimizer steps the model and ``s`` together. The step is ``optimizer="adam"``
    (``torch.optim.Adam``'s update, betas ``(0.9, 0.999)``, eps ``1e-8``) or ``"sgd"``, with
    its own ``lr``. Both references train ``s`` with the model's optimizer and learning
    rate: set ``optimizer`` and ``lr`` to yours to reproduce them.

    Defaults: ``init=0`` (nash-mtl; LibMTL starts at ``−0.5``), ``optimizer="adam"``,
    ``lr=1e-3`` (``torch.optim.Adam``'s default), ``eps=1e-8``.

    Deliberate deviations: the weights are ``e^{−s}`` (factor 2, see above); losses below
    ``eps`` count as ``eps`` in the gradient of ``s`` (a zero loss would drive ``s`` to
    ``−∞``); negative or non-finite losses raise ``ValueError``.

    State: ``s`` and the optimizer moments, bound to the objectives' names.

    Args:
        init: Initial log-variance of every objective.
        optimizer: ``"adam"`` or ``"sgd"`` for the step on ``s``.
        lr: Learning rate of ``s`` (``0`` freezes it).
        eps: Floor of the losses in the gradient of ``s``.

    Report details: ``log_variance`` (``s_t``, used for this step's weights),
    ``grad`` (the gradient of ``s`` at this step).
    """

    name = "uw"
    detail = "log_variance"

    def weights_of(self, s: torch.Tensor) -> torch.Tensor:
        return uw_weights(s)

    def gradient_of(self, s: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        return uw_gradient(s, losses)

    @property
    def log_variances(self) -> dict[str, float]:
        """The current ``s`` per objective (empty before the first step)."""
        return self._values()
