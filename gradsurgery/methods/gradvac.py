"""GradVac: Gradient Vaccine (Wang, Tsvetkov, Firat, Cao; ICLR 2021)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..core.checks import check
from ..core.families import Context, GramianWeighting, Scope
from ..core.method import Decision
from ..core.rng import SeededGenerator
from ..registry import register
from ..solvers.scaled_gramian import decision_gramian

__all__ = ["GradVac", "gradvac_weights"]

#: State key of the one decision taken in global scope.
_GLOBAL = "\x00global"


def gradvac_weights(
    gramian: torch.Tensor | np.ndarray,
    targets: np.ndarray,
    orders: list[list[int]],
    beta: float,
) -> tuple[torch.Tensor, np.ndarray, list[int]]:
    """One GradVac step in Gramian space.

    Each modified row ``g_i^PC`` is tracked as coefficients ``C_i`` over the original rows
    (``g_i^PC = Σ_m C_im g_m``), so its dot products are ``(C_i K)_m`` and its squared norm
    ``C_i K C_iᵀ``; a correction along ``g_j`` adds to ``C_ij``.

    Args:
        gramian: ``(k, k)`` Gramian ``K`` (or any positive multiple of it).
        targets: ``(k, k)`` EMA targets ``φ̂`` (read, not modified).
        orders: ``orders[i]``: the order in which row ``i`` visits the other rows.
        beta: EMA rate of the targets.

    Returns:
        ``(coefficients, new_targets, corrected)``: ``C`` (row ``i`` holds ``g_i^PC`` over
        the original rows; the update's weights are its column sums), the updated targets and
        the rows that were corrected at least once.
    """
    if isinstance(gramian, torch.Tensor):
        gramian = gramian.detach().to(device="cpu", dtype=torch.float64).numpy()
    K = np.asarray(gramian, dtype=np.float64)
    k = K.shape[0]
    phi = targets.copy()
    C = np.eye(k)
    corrected: list[int] = []
    norms = np.sqrt(np.maximum(np.diag(K), 0.0))
    for i in range(k):
        row = C[i]
        for j in orders[i]:
            dots = row @ K
            norm_i = math.sqrt(max(float(dots @ row), 0.0))
            denom = norm_i * norms[j]
            cos = min(max(float(dots[j]) / denom, -1.0), 1.0) if denom > 0 else 0.0
            target = float(phi[i, j])
            if cos < target:
                sin_target = math.sqrt(max(1.0 - target * target, 0.0))
                scale = norms[j] * sin_target
                if scale > 0:
                    sin_now = math.sqrt(max(1.0 - cos * cos, 0.0))
                    row[j] += norm_i * (target * sin_now - cos * sin_target) / scale
                    if i not in corrected:
                        corrected.append(i)
            phi[i, j] = (1.0 - beta) * target + beta * cos
    return torch.from_numpy(C), phi, corrected


@register
class GradVac(GramianWeighting):
    r"""GradVac (Wang, Tsvetkov, Firat, Cao; ICLR 2021, "Gradient Vaccine: Investigating and
    Improving Multi-task Optimization in Massively Multilingual Models").

    Every ordered pair ``(i, j)`` keeps a target cosine ``φ̂_ij`` (an exponential moving
    average, starting at 0). Each step, each objective's gradient ``g_i^{PC} = g_i`` visits
    the others in a fresh random order; with ``φ = cos(g_i^{PC}, g_j)`` measured before any
    change, if ``φ < φ̂_ij`` it adds the multiple of ``g_j`` that sets the cosine to
    ``φ̂_ij`` exactly:

    $$g_i^{PC} \leftarrow g_i^{PC} + \frac{\|g_i^{PC}\|\,\big(\hat\phi_{ij}\sqrt{1-\phi^2}
      - \phi\sqrt{1-\hat\phi_{ij}^2}\big)}{\|g_j\|\sqrt{1-\hat\phi_{ij}^2}}\; g_j ,$$

    and in every case ``φ̂_ij ← (1 − β) φ̂_ij + β φ``. The update is ``Σ_i g_i^{PC}``. With
    ``φ̂ = 0`` the correction is PCGrad's projection, so the first step equals PCGrad.

    Implementation: in Gramian space (each ``g_i^{PC}`` as coefficients over the original
    rows), ``O(k³)`` on the ``k x k`` Gramian and one weighted pass over the rows.

    Deliberate deviations from the reference code (LibMTL, TorchJD):

    * no ``eps = 1e-8`` in the denominators: a zero norm gives cosine 0, and a correction
      whose denominator ``‖g_j‖√(1 − φ̂²)`` is zero is skipped (a target of exactly ±1 cannot
      be reached by adding multiples of ``g_j``). This keeps the method exactly
      1-homogeneous (an absolute eps changes the result for gradients of norm about 1e-8 or
      below);
    * the visiting orders come from a private, seedable generator (TorchJD uses the global
      RNG);
    * targets are kept per block (``scope="block"``, the paper's per-layer use) or once for
      all blocks (``scope="global"``, LibMTL's default whole-model grouping).

    State: per block the ``k x k`` targets ``φ̂``, kept by pair of objective names (a
    reordered table is followed; they restart when the objectives change), and the
    generator.

    Args:
        beta: EMA rate β of the targets (0.5 in LibMTL and TorchJD; the paper's value was
            not verified).
        seed: Seed of the visiting-order generator (used when ``generator`` is None).
        generator: A CPU ``torch.Generator`` to draw the orders from.
        scope: ``"block"`` or ``"global"``.

    Report details: ``order`` (the visiting orders), ``targets`` (φ̂ after the step);
    ``projected`` lists the objectives whose gradient was corrected.
    """

    name = "gradvac"
    stateful = True

    def __init__(
        self,
        *,
        beta: float = 0.5,
        seed: int = 0,
        generator: torch.Generator | None = None,
        scope: Scope = "block",
    ) -> None:
        super().__init__(scope=scope)
        self.beta: float = check("beta", beta, "float", low=0.0, high=1.0)
        self.seed: int = check("seed", seed, "int")
        self._rng = SeededGenerator(seed, generator)
        self._targets: dict[str, tuple[tuple[str, ...], np.ndarray]] = {}

    def weigh(self, context: Context) -> Decision:
        k = context.k
        key = context.block if context.block is not None else _GLOBAL
        names = context.objectives
        saved = self._targets.get(key)
        targets = np.zeros((k, k))
        if saved is not None and set(saved[0]) == set(names):
            # Targets belong to pairs of objectives, whatever the row order.
            order = [saved[0].index(name) for name in names]
            targets = saved[1][np.ix_(order, order)]
        orders = [[j for j in self._rng.permutation(k) if j != i] for i in range(k)]
        coefficients, targets, corrected = gradvac_weights(
            decision_gramian(context)[0], targets, orders, self.beta
        )
        self._targets[key] = (names, targets)
        return Decision(
            coefficients.sum(0),
            projected=tuple(context.objectives[i] for i in sorted(corrected)),
            details={"order": orders, "targets": targets.tolist()},
        )

    def reset(self) -> None:
        super().reset()
        self._rng.reset()
        self._targets.clear()

    def _get_state(self) -> dict[str, Any]:
        return {
            **self._rng.state(),
            "targets": {
                key: {"objectives": list(names), "phi": torch.from_numpy(phi.copy())}
                for key, (names, phi) in self._targets.items()
            },
        }

    def _set_state(self, state: Mapping[str, Any]) -> None:
        self._rng.load(state)
        self._targets = {
            key: (tuple(entry["objectives"]), entry["phi"].numpy().copy())
            for key, entry in state["targets"].items()
        }
