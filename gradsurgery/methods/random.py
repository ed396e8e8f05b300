"""Random loss weighting, RLW (Lin et al., TMLR 2022)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..core.checks import check
from ..core.families import Context, GramianWeighting, Scope
from ..core.method import Decision
from ..core.rng import SeededGenerator
from ..registry import register

__all__ = ["Random", "random_weights"]


def random_weights(k: int, generator: torch.Generator) -> torch.Tensor:
    """``k · softmax(z)`` with ``z ~ N(0, I_k)`` drawn from ``generator`` (float64)."""
    z = torch.randn(k, generator=generator, dtype=torch.float64)
    return k * torch.softmax(z, dim=0)


@register
class Random(GramianWeighting):
    r"""Random loss weighting, RLW (Lin, Ye, Zhang, Tsang; TMLR 2022, "Reasonable
    Effectiveness of Random Weighting: A Litmus Test for Multi-Task Learning"),
    Algorithm 2.

    Every step draws ``z ~ N(0, I_k)`` and weighs the rows by

    $$w = k\cdot\operatorname{softmax}(z),\qquad
      w_i = k\,\frac{e^{z_i}}{\sum_j e^{z_j}} ,$$

    positive weights with ``Σ w = k`` and expectation 1 each, so ``k`` identical rows give
    their sum (the paper's weights sum to 1: ``c = k``). The normal-plus-softmax sampler is
    the paper's default; its other samplers are not offered.

    Deliberate choices:

    * **One draw per step for all blocks** (``scope="global"``, the default): the paper
      weighs the losses, so every parameter sees the same weights. ``scope="block"`` draws
      independently for each block.
    * The draws come from a private, seedable generator (the references use the global
      RNG); its state is the method's only state, saved by ``state_dict`` and rewound by
      ``reset``.

    Args:
        seed: Seed of the generator (used when ``generator`` is None).
        generator: A CPU ``torch.Generator`` to draw from instead.
        scope: ``"global"`` (one draw per step) or ``"block"`` (one per block).

    Report details: none (the weights are the draw).
    """

    name = "random"
    stateful = True
    uses_gramian = False

    def __init__(
        self,
        *,
        seed: int = 0,
        generator: torch.Generator | None = None,
        scope: Scope = "global",
    ) -> None:
        super().__init__(scope=scope)
        self.seed: int = check("seed", seed, "int")
        self._rng = SeededGenerator(seed, generator)

    def weigh(self, context: Context) -> Decision:
        return Decision(random_weights(context.k, self._rng.generator))

    def reset(self) -> None:
        super().reset()
        self._rng.reset()

    def _get_state(self) -> dict[str, Any]:
        return self._rng.state()

    def _set_state(self, state: Mapping[str, Any]) -> None:
        self._rng.load(state)
