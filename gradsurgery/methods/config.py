"""ConFIG: conflict-free training (Liu, Chu, Thuerey; ICLR 2025)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..core.families import Context, GramianWeighting, Scope
from ..core.method import Decision
from ..registry import register
from ..solvers.linalg import as_gramian_array, cosine_matrix, kept_eigenpairs
from ..solvers.scaled_gramian import decision_gramian
from ._preference import check_preference, preference_array

__all__ = ["ConFIG", "config_weights"]

#: A preference whose component in the span of the unit rows is at or below this fraction
#: of its norm gives no direction (update 0).
_DIRECTION_RTOL = 1e-12


def config_weights(
    gramian: torch.Tensor | np.ndarray, preference: np.ndarray
) -> tuple[torch.Tensor, dict[str, Any]]:
    """ConFIG's row weights from the Gramian.

    With ``n_i = ‖g_i‖`` and the cosine matrix ``C = N⁻¹KN⁻¹`` of the non-zero rows,
    ``ṽ = C⁺p`` are the weights of ``Û⁺p`` over the unit rows, ``v = N⁻¹ṽ`` its weights
    over the rows, and ``w = (1ᵀKv / vᵀKv) · v`` (the direction ``Gᵀv/‖Gᵀv‖`` times the
    projection length ``Σ_i g_i·ĝ``). Zero rows (see
    `gradsurgery.solvers.linalg.nonzero_rows`) get weight 0.

    Returns:
        ``(weights, info)``: ``(k,)`` float64 weights; ``info["length"]`` is the update's
        length ``Σ_i g_i·ĝ`` (0 when there is no direction).
    """
    K = as_gramian_array(gramian)
    k = K.shape[0]
    weights = np.zeros(k)
    C, norms, nonzero = cosine_matrix(K)
    p = preference[nonzero]
    if not nonzero.any() or not (p > 0).any():
        return torch.from_numpy(weights), {"length": 0.0}
    n = norms[nonzero] / norms.max()
    lam, V = kept_eigenpairs(C)
    components = V.T @ p
    if float(np.linalg.norm(components)) <= _DIRECTION_RTOL * float(np.linalg.norm(p)):
        return torch.from_numpy(weights), {"length": 0.0}
    v = V @ (components / lam)
    Cv = C @ v
    squared = float(v @ Cv)  # ‖Û⁺p‖²
    projections = float(n @ Cv)  # Σ_i g_i·ĝ · ‖Û⁺p‖ / max ‖g_i‖
    weights[nonzero] = (projections / squared) * v / n
    length = projections / math.sqrt(squared) * float(norms.max())
    return torch.from_numpy(weights), {"length": length}


@register
class ConFIG(GramianWeighting):
    r"""ConFIG (Liu, Chu, Thuerey; ICLR 2025, "ConFIG: Towards Conflict-free Training of
    Physics Informed Neural Networks"), Eq. 2, in a Gramian form derived for this library.

    With unit rows ``û_i = g_i/‖g_i‖`` (the ``k x P`` matrix ``Û``) and a preference ``p``,
    the direction makes the prescribed angles with every objective, and its length is the
    sum of the projections:

    $$\hat g = \frac{\hat U^{+} p}{\lVert \hat U^{+} p \rVert}, \qquad
    d = \Big(\sum_i g_i \cdot \hat g\Big)\, \hat g .$$

    ``û_i·ĝ`` is proportional to ``p_i`` when the rows are independent, so with ``p = 1``
    every objective sees the same cosine with the update and none conflicts with it.
    Gramian form: with ``N = diag(‖g_i‖)`` and ``C = N⁻¹KN⁻¹``, ``Û⁺p = GᵀN⁻¹C⁺p``, so
    ``v = N⁻¹C⁺p`` and ``w = (1ᵀKv / vᵀKv)·v``; the update is ``d = Σ_i w_i g_i``.

    Scale: ``c = 1`` with the default ``p = 1`` (``k`` identical rows give their sum). No
    state (the momentum variant M-ConFIG keeps per-objective moments of the full gradients
    and is not a Gramian weighting; not provided).

    Deliberate choices and deviations:

    * The pseudo-inverse is taken on the cosine matrix with the rank threshold of
      `gradsurgery.solvers.linalg` (eigenvalues below ``k · 2⁻²³`` of the largest count as
      zero). The official code uses ``torch.linalg.lstsq`` (or ``pinv``) on ``Û`` itself;
      both agree for independent rows. With more objectives than independent directions
      ``Û⁺p`` is a least-squares solution and the conflict-free guarantee is lost (three
      rows in a plane: ``w = (0.25, 0.25, −0.5)``, conflicting with the third row).
    * Zero rows are ignored (weight 0), as the official ``unit_vector``; a row shorter than
      ``1e-100`` of the longest counts as zero (`gradsurgery.solvers.linalg.nonzero_rows`),
      so that the decision does not change when the gradients are rescaled. No direction
      (``Û⁺p = 0``, e.g. two opposite rows) gives update 0, as the official code and TorchJD.
    * The official ``allow_simplified_model`` closed form for ``k = 2`` equals the general
      formula and is not used; other length models of ``length_model.py`` are not provided
      (the default, projection length, is).

    Args:
        preference: ``p``, one non-negative number per objective (default all ones).
        scope: ``"block"`` or ``"global"`` (one decision on all blocks together, as the
            reference on all parameters).

    Report details: ``length`` (the update's length ``Σ_i g_i·ĝ``; it can be negative when
    the rows are dependent and the least-squares direction points against their sum).
    """

    name = "config"

    def __init__(
        self, *, preference: Sequence[float] | None = None, scope: Scope = "block"
    ) -> None:
        super().__init__(scope=scope)
        self.preference = check_preference(preference)

    def weigh(self, context: Context) -> Decision:
        weights, info = config_weights(
            decision_gramian(context)[0], preference_array(self.preference, context.k)
        )
        return Decision(weights, details=info)
