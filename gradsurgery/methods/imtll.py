"""IMTL-L: the loss-balancing part of Impartial Multi-Task Learning (Liu et al.; ICLR 2021)."""

from __future__ import annotations

import torch

from ..registry import register
from ._learned_scales import LearnedScales

__all__ = ["IMTLL", "imtll_gradient"]


def imtll_gradient(scales: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    """``∂/∂s_i`` of the scaled loss ``e^{s_i}L_i − s_i``: ``e^{s_i}L_i − 1``."""
    return torch.exp(scales) * losses - 1.0


@register
class IMTLL(LearnedScales):
    r"""IMTL-L (Liu et al.; ICLR 2021, "Towards Impartial
    Multi-task Learning"), the loss part.

    Each objective has a learned scale ``s_i``; the scaled loss is

    $$\sum_i e^{s_i} L_i - s_i ,$$

    so the row weights are ``w_i = e^{s_i}`` and ``s`` is pushed towards
    ``e^{s_i} L_i = 1`` by the gradient ``∂/∂s_i = e^{s_i} L_i − 1``: at the fixed point
    every scaled loss equals 1 and ``w_i = 1/L_i``. ``s = 0`` gives the plain sum (scale
    convention, factor 1).

    **How s is learned.** The method holds ``s`` and trains it itself: every call weighs the
    rows with the current ``s_t``, then takes one step on ``s`` with the gradient at
    ``(s_t, L_t)``, as the reference does when the model optimizer steps the model and ``s``
    together. The step is ``optimizer="adam"`` (``torch.optim.Adam``'s update, betas
    ``(0.9, 0.999)``, eps ``1e-8``) or ``"sgd"``, with its own ``lr``; LibMTL trains ``s``
    with the model's optimizer, so set ``optimizer`` and ``lr`` to yours to reproduce it.

    Defaults: ``init=0`` (LibMTL), ``optimizer="adam"``, ``lr=1e-3``
    (``torch.optim.Adam``'s default), ``eps=1e-8``.

    Deliberate deviations: losses below ``eps`` count as ``eps`` in the gradient of ``s`` (a
    zero loss would drive ``s`` to ``+∞``); negative or non-finite losses raise
    ``ValueError``.

    State: ``s`` and the optimizer moments, bound to the objectives' names.

    Args:
        init: Initial scale of every objective.
        optimizer: ``"adam"`` or ``"sgd"`` for the step on ``s``.
        lr: Learning rate of ``s`` (``0`` freezes it).
        eps: Floor of the losses in the gradient of ``s``.

    Report details: ``scale`` (``s_t``, used for this step's weights), ``grad`` (the
    gradient of ``s`` at this step).
    """

    name = "imtll"
    detail = "scale"

    def weights_of(self, s: torch.Tensor) -> torch.Tensor:
        return torch.exp(s)

    def gradient_of(self, s: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        return imtll_gradient(s, losses)

    @property
    def scales(self) -> dict[str, float]:
        """The current ``s`` per objective (empty before the first step)."""
        return self._values()
