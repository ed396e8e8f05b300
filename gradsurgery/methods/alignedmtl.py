"""Aligned-MTL: independent component alignment (Senushkin et al., CVPR 2023)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from ..core.checks import check
from ..core.families import Context, GramianWeighting, Scope
from ..core.method import Decision
from ..registry import register
from ..solvers.linalg import RANK_RTOL, as_gramian_array, kept_eigenpairs
from ..solvers.scaled_gramian import decision_gramian
from ._preference import check_preference, preference_array

__all__ = ["AlignedMTL", "alignedmtl_weights"]

ScaleMode = Literal["min", "median", "rmse"]


def alignedmtl_weights(
    gramian: torch.Tensor | np.ndarray,
    preference: np.ndarray,
    *,
    scale_mode: ScaleMode = "min",
    rank_rtol: float = RANK_RTOL,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Aligned-MTL's row weights ``w = B p`` from the Gramian.

    ``K = VΛVᵀ``; the eigenpairs with ``λ > k · rank_rtol · λ_max`` are kept (``R`` of
    them) and ``B = √σ · V_R Λ_R^{-1/2} V_Rᵀ`` with ``σ`` the smallest kept eigenvalue
    (``"min"``), the lower median (``"median"``) or the mean (``"rmse"``). Rank 0 gives
    ``B = I``.

    Returns:
        ``(weights, info)``: ``(k,)`` float64 weights; ``info`` holds ``rank`` and
        ``condition`` (``λ_max/λ_min`` of the kept eigenvalues).
    """
    K = as_gramian_array(gramian)
    k = K.shape[0]
    scale = float(np.diagonal(K).max()) if k else 0.0
    lam, V = kept_eigenpairs(K / scale, rtol=rank_rtol) if scale > 0 else (np.zeros(0), None)
    rank = lam.shape[0]
    if rank == 0 or V is None:
        return torch.from_numpy(preference.copy()), {"rank": 0, "condition": 1.0}
    if scale_mode == "min":
        sigma = float(lam[-1])
    elif scale_mode == "median":
        sigma = float(np.sort(lam)[(rank - 1) // 2])  # the lower middle, as torch.median
    else:
        sigma = float(lam.mean())
    weights = np.sqrt(sigma) * (V @ ((V.T @ preference) / np.sqrt(lam)))
    return torch.from_numpy(weights), {"rank": rank, "condition": float(lam[0] / lam[-1])}


@register
class AlignedMTL(GramianWeighting):
    r"""Aligned-MTL (Senushkin, Patakin, Kuznetsov, Konushin; CVPR 2023, "Independent
    Component Alignment for Multi-Task Learning"), Algorithm 1.

    The gradient rows are transformed so that the system they form has condition number 1:
    with the eigendecomposition ``K = VΛVᵀ`` restricted to its ``R`` non-zero eigenvalues,

    $$B = \sqrt{\sigma}\, V_R \Lambda_R^{-1/2} V_R^\top, \qquad
    w = B p, \qquad d = \sum_i w_i g_i ,$$

    where ``σ`` is the smallest kept eigenvalue (``scale_mode="min"``, the paper's choice).
    The aligned rows ``BG`` have equal singular values ``√σ``: every principal direction of
    the gradients gets the same magnitude, so no dominant component (a task with large
    gradients) drowns the others.

    Scale: with the default preference ``p = 1`` the weights follow the convention (``c =
    1``: ``k`` identical rows give their sum). TorchJD's default ``p = 1/k`` gives ``1/k``
    of these weights. No state.

    Deliberate choices and deviations:

    * Eigenvalues at or below ``k · rank_rtol · λ_max`` count as zero; ``rank_rtol``
      defaults to float32's epsilon ``2⁻²³ ≈ 1.19e-7``, which both references use (they take
      ε of the default dtype, float32, not of the Gramian). Rank 0 (all rows zero) gives
      ``B = I`` (update 0), as TorchJD; LibMTL fails there.
    * With dependent rows the basis is truncated and weights can be negative (three rows
      in a plane: ``(0.2722, 0.2722, −0.2722)``). A zero row gets weight 0.
    * ``"median"`` takes the lower middle value for an even count, as ``torch.median``
      (so for two kept eigenvalues it equals ``"min"``); ``"rmse"`` takes the mean
      eigenvalue, which TorchJD reports the original implementation used. LibMTL's
      ``torch.symeig`` is replaced by a symmetric eigensolver.

    Args:
        preference: ``p``, one non-negative number per objective (default all ones).
        scale_mode: ``"min"``, ``"median"`` or ``"rmse"``.
        rank_rtol: Relative eigenvalue threshold per unit of ``k``.
        scope: ``"block"`` or ``"global"`` (one decision on all blocks together, as the
            references on all shared parameters).

    Report details: ``rank`` (kept eigenvalues), ``condition`` (``λ_max/λ_min`` among
    them).
    """

    name = "alignedmtl"

    def __init__(
        self,
        *,
        preference: Sequence[float] | None = None,
        scale_mode: ScaleMode = "min",
        rank_rtol: float = RANK_RTOL,
        scope: Scope = "block",
    ) -> None:
        super().__init__(scope=scope)
        self.preference = check_preference(preference)
        self.scale_mode: ScaleMode = check(
            "scale_mode", scale_mode, "str", options=("min", "median", "rmse")
        )
        self.rank_rtol: float = check("rank_rtol", rank_rtol, "float", low=0.0, high=1.0)

    def weigh(self, context: Context) -> Decision:
        weights, info = alignedmtl_weights(
            decision_gramian(context)[0],
            preference_array(self.preference, context.k),
            scale_mode=self.scale_mode,
            rank_rtol=self.rank_rtol,
        )
        return Decision(weights, details=info)
