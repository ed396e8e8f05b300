"""Confidence ratios and OGM-style modulation coefficients, shared by OGM-GE and GMP."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from ..core.arrays import namespace

__all__ = [
    "CoefficientForm",
    "coefficient_vector",
    "discrepancy_ratios",
    "modulation_coefficient",
    "ratio_vector",
]

CoefficientForm = Literal["published", "continuous"]


def ratio_vector(values: Any, *, eps: float = 0.0, inverse: bool = False) -> Any:
    """Each entry of ``values`` relative to the mean of the others; the math of
    `discrepancy_ratios`, on a NumPy array or a torch tensor (any device, no host
    synchronisation).

    Args:
        values: ``(M,)`` per-member scalars.
        eps: Added to the denominator.
        inverse: Flip the fraction.

    Returns:
        ``(M,)`` ratios, of the input's kind; all ones for one member; ``inf`` for a zero
        denominator (1 when the numerator is zero too), never NaN.
    """
    xp = namespace(values)
    members = values.shape[0]
    ones = xp.ones_like(values)
    if members == 1:
        return ones
    # The others' mean as one product with a 0/1 mask: for two members it is exactly the
    # other value (a sum minus self would round).
    mask = ones[:, None] * ones[None, :] - xp.diag(ones)
    others = (mask @ values) / (members - 1)
    num, den = (others, values + eps) if inverse else (values, others + eps)
    positive = den > 0
    safe = xp.where(positive, den, ones)
    fallback = xp.where(num > 0, xp.full_like(num, math.inf), ones)
    return xp.where(positive, num / safe, fallback)


def coefficient_vector(ratio: Any, alpha: float, form: CoefficientForm = "published") -> Any:
    """`modulation_coefficient` of every entry of ``ratio`` (a NumPy array or a tensor)."""
    if form not in ("published", "continuous"):
        raise ValueError(f"coefficient form must be 'published' or 'continuous', got {form!r}")
    xp = namespace(ratio)
    ones = xp.ones_like(ratio)
    if alpha == 0:
        return ones
    if form == "published":
        return xp.where(ratio > 1, _one_minus_tanh(alpha * ratio), ones)
    excess = ratio - 1
    return _one_minus_tanh(alpha * xp.where(excess > 0, excess, 0 * excess))


def _one_minus_tanh(x: Any) -> Any:
    """``1 − tanh(x)`` for ``x ≥ 0`` without cancellation: ``2e^{−2x} / (1 + e^{−2x})``."""
    e = namespace(x).exp(-2.0 * x)
    return 2.0 * e / (1.0 + e)


def discrepancy_ratios(
    values: Mapping[str, float], *, eps: float = 0.0, inverse: bool = False
) -> dict[str, float]:
    """Each member's value relative to the mean of the others.

    ``ratio[m] = v[m] / (mean_{n≠m} v[n] + eps)``; with ``inverse=True`` the fraction is
    flipped, ``mean_{n≠m} v[n] / (v[m] + eps)`` (GMP's domain ratio σ: a *lower* domain
    confidence means a *more* invariant modality). With one member the ratio is 1. For two
    members and ``eps = 0`` the two ratios multiply to 1. A zero denominator gives ``inf``
    (or 1 when the numerator is zero too), never NaN.

    Args:
        values: Per-member scalars, e.g. batch-mean confidences per modality.
        eps: Added to the denominator.
        inverse: Flip the fraction.

    Returns:
        The ratio of every member.
    """
    names = list(values)
    vector = np.array([float(values[m]) for m in names], dtype=np.float64)
    ratios = ratio_vector(vector, eps=eps, inverse=inverse).tolist()
    return dict(zip(names, ratios))


def modulation_coefficient(
    ratio: float, alpha: float, form: CoefficientForm = "published"
) -> float:
    """OGM-GE's suppression coefficient for a member with discrepancy ratio ``ratio``.

    ``"published"`` (OGM-GE's paper and current code, GMP's Eqs. 9–10):
    ``1 − tanh(α·ratio)`` if ``ratio > 1`` else ``1`` — note the jump at 1.
    ``"continuous"`` (OGM-GE's code before May 2022): ``1 − tanh(α·max(ratio − 1, 0))``.

    Returns:
        A coefficient in ``[0, 1]``; exactly 1 when ``ratio ≤ 1`` or ``α = 0``.
    """
    return float(coefficient_vector(np.array([float(ratio)]), alpha, form)[0])
