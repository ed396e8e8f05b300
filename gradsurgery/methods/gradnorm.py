"""GradNorm: gradient normalisation for adaptive loss balancing (Chen et al.; ICML 2018)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..core.checks import check
from ..core.families import Context, LossWeighting
from ..core.method import Decision
from ..registry import register
from ..solvers.learned import LearnedVector, Optimizer, checked_losses

__all__ = ["GradNorm", "gradnorm_gradient"]


def gradnorm_gradient(
    weights: torch.Tensor,
    squared_norms: torch.Tensor,
    losses: torch.Tensor,
    initial: torch.Tensor,
    alpha: float,
    eps: float = 1e-8,
) -> tuple[torch.Tensor, dict[str, list[float]]]:
    """The gradient of GradNorm's auxiliary loss in the weights, with its parts.

    With ``G_i = w_i ‖g_i‖``, ``Ḡ = mean_i G_i``, ``L̃_i = L_i / L_i(0)``,
    ``r_i = L̃_i / mean_j L̃_j`` and the constant targets ``Ḡ r_i^α``, the auxiliary loss
    ``Σ_i |G_i − Ḡ r_i^α|`` has the gradient ``sign(G_i − Ḡ r_i^α) ‖g_i‖``.

    Args:
        weights: ``(k,)`` current weights ``w``.
        squared_norms: ``(k,)`` squared row norms ``K_ii`` of the chosen block.
        losses: ``(k,)`` current losses ``L(t)``.
        initial: ``(k,)`` initial losses ``L(0)`` (floored at ``eps``).
        alpha: Restoring-force strength ``α``.
        eps: Floor of ``L(0)``.

    Returns:
        ``(gradient, parts)`` with parts ``norms`` (``G``), ``rates`` (``r``), ``targets``.
    """
    row_norms = squared_norms.clamp_min(0).sqrt()
    norms = weights * row_norms
    mean_norm = norms.mean()
    training = losses / initial.clamp_min(eps)
    mean_training = training.mean()
    rates = training / mean_training if mean_training > 0 else torch.ones_like(training)
    targets = mean_norm * rates**alpha
    gradient = torch.sign(norms - targets) * row_norms
    parts = {"norms": norms.tolist(), "rates": rates.tolist(), "targets": targets.tolist()}
    return gradient, parts


@register
class GradNorm(LossWeighting):
    r"""GradNorm (Chen et al.; ICML 2018, "GradNorm: Gradient
    Normalization for Adaptive Loss Balancing in Deep Multitask Networks").

    Learned weights ``w`` (start at 1). On one block ``W`` (the paper: the last shared
    layer), with ``G_i = ‖w_i g_i^W‖ = w_i \sqrt{K^W_{ii}}`` and training rates
    ``r_i = L̃_i / mean_j L̃_j``, ``L̃_i = L_i(t)/L_i(0)``, GradNorm minimises

    $$L_{grad} = \sum_i \bigl| G_i - \bar G\, r_i^{\alpha} \bigr|, \qquad
      \bar G = \tfrac1k \sum_i G_i ,$$

    with the targets ``Ḡ r_i^α`` held constant, so ``∂L_grad/∂w_i = sign(G_i − Ḡ r_i^α)
    \sqrt{K^W_{ii}}``. After each step ``w`` is clipped at 0 and renormalised to
    ``Σ w = k`` (scale convention, factor 1). The model update uses the current ``w``.

    **Why a loss weighting that reads a Gramian.** One weight vector is learned and applied
    to every block (as in the paper); only the chosen block's Gramian *diagonal* (the row
    norms) drives it. A per-block `GramianWeighting` would learn one ``w`` per block, which
    is not GradNorm. ``block=None`` uses all blocks together (the sum of their Gramians, as
    LibMTL, which takes all shared parameters).

    **How w is learned.** The method holds ``w`` and trains it itself: every call weighs the
    rows with ``w_t``, then steps ``w`` with the gradient above at ``w_t``
    (``optimizer="adam"``: ``torch.optim.Adam``'s update, betas ``(0.9, 0.999)``, eps
    ``1e-8``; or ``"sgd"``), then clips and renormalises. ``L(0)`` is the first call's
    losses.

    Defaults: ``alpha=1.5`` (LibMTL; the paper tunes it per problem), ``optimizer="adam"``,
    ``lr=1e-3`` (``torch.optim.Adam``'s default; the paper does not fix it), ``block=None``,
    ``eps=1e-8``.

    Deliberate deviations from LibMTL: ``w`` is renormalised as in the paper, where LibMTL
    parameterises ``w = k·softmax(θ)``; ``L(0)`` is the first step's losses, where LibMTL
    uses equal weights for the first epoch and that epoch's mean losses. Guards: ``L(0)`` is
    floored at ``eps``; ``w`` is clipped at 0 (a zero row's weight would otherwise grow
    without end while the others turn negative); if every weight is clipped, ``w`` returns
    to 1. Negative or non-finite losses raise ``ValueError``.

    State: ``w`` and its optimizer moments, ``L(0)``, bound to the objectives' names.

    Args:
        alpha: Restoring-force strength ``α``.
        optimizer: ``"adam"`` or ``"sgd"`` for the step on ``w``.
        lr: Learning rate of ``w`` (``0`` freezes it).
        block: The block whose row norms drive ``w`` (``None``: all blocks together).
        eps: Floor of ``L(0)``.

    Report details: ``w`` (used for this step), ``norms`` (``G``), ``rates`` (``r``),
    ``targets``, ``grad``.
    """

    name = "gradnorm"
    stateful = True
    uses_gramian = True

    def __init__(
        self,
        *,
        alpha: float = 1.5,
        optimizer: Optimizer = "adam",
        lr: float = 1e-3,
        block: str | None = None,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        self.alpha: float = check("alpha", alpha, "float", low=0.0)
        self.optimizer: Optimizer = check("optimizer", optimizer, "str", options=("adam", "sgd"))
        self.lr: float = check("lr", lr, "float", low=0.0)
        self.block: str | None = check("block", block, "str", optional=True)
        self.eps: float = check("eps", eps, "float", low=0.0, low_open=True)
        self._w = LearnedVector(1.0, self.optimizer, self.lr)
        self._initial: torch.Tensor | None = None

    def weigh_losses(self, context: Context) -> Decision:
        owner = type(self).__name__
        losses = checked_losses(context.table, owner)
        gramian = Context(context.table, self.block).gramian
        order = self._w.bind(context.objectives, owner)
        if self._initial is None:
            self._initial = losses.clone()
        elif order is not None:
            self._initial = self._initial[order]
        weights = self._w.value
        grad, parts = gradnorm_gradient(
            weights,
            gramian.diagonal().to("cpu", torch.float64),
            losses,
            self._initial,
            self.alpha,
            self.eps,
        )
        self._w.step(grad)
        new = self._w.value.clamp_min(0.0)
        total = float(new.sum())
        self._w.value = new * (len(new) / total) if total > 0 else torch.ones_like(new)
        return Decision(weights, details={"w": weights.tolist(), **parts, "grad": grad.tolist()})

    @property
    def task_weights(self) -> dict[str, float]:
        """The current ``w`` per objective (empty before the first step)."""
        names = self._w.names or ()
        return dict(zip(names, self._w.value.tolist()))

    def reset(self) -> None:
        super().reset()
        self._w.reset()
        self._initial = None

    def _get_state(self) -> dict[str, Any]:
        initial = None if self._initial is None else self._initial.clone()
        return {"w": self._w.state(), "initial_losses": initial}

    def _set_state(self, state: Mapping[str, Any]) -> None:
        self._w.load(state["w"])
        initial = state["initial_losses"]
        self._initial = (
            None if initial is None else torch.as_tensor(initial, dtype=torch.float64).clone()
        )
