"""A block's Gramian for a decision, exact even when its entries are below float64's range.

Rows whose norms are all below about ``1e-154`` have a Gramian whose entries are subnormal or
zero in float64: it has lost its precision (or vanished) before any method reads it, so a
decision taken on it differs from the decision on the same rows scaled up. Methods whose
weights do not depend on the Gramian's scale can decide on the rows' Gramian after an exact
power-of-two rescaling instead; methods whose weights do (degree ≠ 1: Nash-MTL, FairGrad) also
get the exponent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..core.families import Context
from ..core.gramian import compute_gramian

__all__ = ["PRECISE_SCALE", "decision_gramian", "scaled_gramian"]

#: Below this mean diagonal the Gramian is recomputed from rescaled rows (float64's smallest
#: normal number is 2.2e-308; entries well above it carry full precision).
PRECISE_SCALE = 1e-280


def scaled_gramian(
    gramian: torch.Tensor, matrices: Sequence[torch.Tensor]
) -> tuple[np.ndarray, float]:
    """The Gramian as a float64 array, times an exact power of four if it was too small.

    Args:
        gramian: The ``(k, k)`` Gramian of ``matrices`` (summed over them).
        matrices: The ``(k, P_b)`` rows it was computed from (one or more blocks); read only
            when the Gramian's mean diagonal is below `PRECISE_SCALE`.

    Returns:
        ``(K, log_scale)`` with the true Gramian equal to ``exp(log_scale) · K``
        (``log_scale = 0`` in the usual case, where ``K`` is the Gramian itself).
    """
    K = gramian.detach().to(device="cpu", dtype=torch.float64).numpy()
    k = K.shape[0]
    if float(np.trace(K)) / k >= PRECISE_SCALE or not matrices:
        return K, 0.0  # usual case; or rows not kept (memory-light engines): as computed
    largest = max(float(m.detach().abs().max()) for m in matrices)
    if not (largest > 0 and math.isfinite(largest)):
        return K, 0.0
    # 2^p · largest lies in [0.5, 1): multiplying by 2^p is exact.
    p = -math.frexp(largest)[1]
    total = np.zeros((k, k))
    half = p // 2  # 2^p itself may overflow (subnormal rows): two exact steps
    for m in matrices:
        rows = m.detach().to(torch.float64) * 2.0**half * 2.0 ** (p - half)
        total += compute_gramian(rows).numpy()
    return total, -2.0 * p * math.log(2.0)


def decision_gramian(context: Context) -> tuple[np.ndarray, float]:
    """`scaled_gramian` of a weighting's context: its block's rows, or every block's rows in
    global scope."""
    table = context.table
    blocks = [table[context.block]] if context.block is not None else table.blocks.values()
    return scaled_gramian(context.gramian, [b.matrix for b in blocks if b.has_rows])
