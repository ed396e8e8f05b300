"""IMTL-G: the gradient part of Impartial Multi-Task Learning (Liu et al., ICLR 2021)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..core.families import Context, GramianWeighting, Scope
from ..core.method import Decision
from ..registry import register
from ..solvers.linalg import as_gramian_array, cosine_matrix, cosine_rank, pinv_apply
from ..solvers.scaled_gramian import decision_gramian

__all__ = ["IMTLG", "imtlg_weights"]

#: ``|Σv|`` at or below this fraction of ``max(1, ‖v‖₁)`` (on the normalised Gramian) counts
#: as zero: the direction is then undefined and the weights are zero.
_SUM_RTOL = 1e-12


def imtlg_weights(gramian: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, dict[str, Any]]:
    """IMTL-G's row weights from the Gramian, on the library's scale (``k·v/|Σv|``).

    ``v = K⁺n`` with ``n_i = √K_ii``, computed on ``K`` divided by its largest diagonal
    entry (the weights do not depend on the scale). The pseudo-inverse keeps as many
    eigenpairs as the rows have independent directions, judged on their cosines
    (`gradsurgery.solvers.linalg.cosine_rank`); when all non-zero rows are independent it
    is computed as ``N⁻¹C⁻¹1`` (``N`` the norms, ``C`` the cosine matrix), the same vector
    without the precision that ``K``'s eigenvalues lose when the norms differ widely.

    Returns:
        ``(weights, info)``: ``(k,)`` float64 weights; ``info["sum_v"]`` is ``Σv`` on the
        normalised scale (weights are zero when it is zero).
    """
    K = as_gramian_array(gramian)
    k = K.shape[0]
    scale = float(np.diagonal(K).max()) if k else 0.0
    if scale <= 0:
        return torch.zeros(k, dtype=torch.float64), {"sum_v": 0.0}
    Kn = K / scale
    C, n, nonzero = cosine_matrix(Kn)
    rank = cosine_rank(Kn)
    if rank == int(nonzero.sum()):
        # Independent directions: K⁺n = N⁻¹C⁻¹1 on the non-zero rows, which does not lose
        # the precision K's eigenvalues lose when the rows' norms differ widely.
        v = np.zeros(k)
        v[nonzero] = pinv_apply(C, np.ones(rank), rank=rank) / n[nonzero]
    else:
        v = pinv_apply(Kn, n, rank=rank)
    total = float(v.sum())
    if abs(total) <= _SUM_RTOL * max(1.0, float(np.abs(v).sum())):
        return torch.zeros(k, dtype=torch.float64), {"sum_v": 0.0}
    # |Σv|, not Σv: the direction Gᵀv has projection +1 on every unit gradient; dividing by
    # a negative Σv (possible for k ≥ 3) would turn it into an ascent direction for all.
    return torch.from_numpy(k * v / abs(total)), {"sum_v": total}


@register
class IMTLG(GramianWeighting):
    r"""IMTL-G (Liu, Li, Kuang, Xue, Chen, Yang, Liao, Zhang; ICLR 2021, "Towards Impartial
    Multi-task Learning"), the gradient-balancing half of IMTL, in the Gramian form of Quinton
    & Rey (2024) that TorchJD implements.

    The paper looks for a combination ``d = Σ_i α_i g_i`` with ``Σ_i α_i = 1`` whose
    projections on the unit gradients ``u_i = g_i/‖g_i‖`` are all equal. On the Gramian: with
    ``n_i = ‖g_i‖ = √K_ii``,

    $$v = K^{+} n, \qquad \alpha = \frac{v}{\lvert \sum_i v_i \rvert}, \qquad
    d = k \sum_i \alpha_i g_i .$$

    When the rows are linearly independent ``Kv = n``, i.e. ``(Gᵀv)·u_i = 1`` for every ``i``,
    which is the paper's closed form. With dependent rows the pseudo-inverse gives the
    least-squares solution: equal projections may then be unattainable and weights can be
    negative (three rows in a plane: ``α = (1, 1, −1)``).

    Scale: ``c = k`` (``Σα = 1`` unless ``Σv < 0``, below; ``k`` identical rows give their
    sum). No
    hyper-parameters besides ``scope``; no state.

    Deliberate choices and deviations:

    * The pseudo-inverse keeps the ``r`` largest eigenpairs of ``K``, where ``r`` is the
      rank of the rows' cosine matrix with eigenvalues below ``k · 2⁻²³`` of the largest
      counted as zero (float32's epsilon, the threshold of TorchJD's ``pinv`` on a float32
      Gramian; see `gradsurgery.solvers.linalg`). Judging the rank on the cosines keeps the
      method impartial: TorchJD thresholds the eigenvalues of ``K`` itself, so an objective
      whose gradient is about ``1e4`` times shorter than another's drops out of its
      pseudo-inverse. With independent rows nothing drops out; with dependent rows, a row
      about ``1e6`` times shorter than the longest is below what ``K``'s eigenvalues
      resolve in float64 and does drop out. The weights do not depend on the gradients'
      overall scale.
    * ``Σv = 0`` (relative to ``max(1, ‖v‖₁)`` on that scale, at ``1e-12``) gives zero
      weights, as TorchJD does below an absolute ``1e-12``. The paper's formula divides by a
      singular matrix on identical rows (LibMTL raises; nash-mtl adds ``1e-8·I``); the
      pseudo-inverse returns ``1`` each.
    * The weights are ``k·v/|Σv|``, not ``k·v/Σv``. ``Gᵀv`` has projection ``+1`` on every
      unit gradient (when attainable), but ``Σv`` can be negative for ``k ≥ 3`` even with
      independent rows (rows of very different norms); the paper's normalisation
      ``Σα = 1`` (and TorchJD) then flips the update into an ascent direction for every
      objective. Here the weights sum to ``−k`` instead, and ``sum_v`` in the report shows
      the sign.
    * A zero row gets weight 0 (its unit vector is undefined; LibMTL gives NaN).
    * The references apply IMTL-G to gradients of the shared representation and couple it
      with IMTL-L (loss scaling, `imtll`); here it is a weighting of the block's rows.

    Args:
        scope: ``"block"`` or ``"global"`` (one decision on all blocks together).

    Report details: ``sum_v`` (``Σv`` on the normalised Gramian; 0 when the direction is
    undefined).
    """

    name = "imtlg"

    def __init__(self, *, scope: Scope = "block") -> None:
        super().__init__(scope=scope)

    def weigh(self, context: Context) -> Decision:
        weights, info = imtlg_weights(decision_gramian(context)[0])
        return Decision(weights, details=info)
