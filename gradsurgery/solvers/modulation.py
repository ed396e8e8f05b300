"""Confidence ratios and OGM-style modulation coefficients, shared by OGM-GE and GMP."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

__all__ = ["CoefficientForm", "discrepancy_ratios", "modulation_coefficient"]

CoefficientForm = Literal["published", "continuous"]


def _ratio(num: float, den: float) -> float:
    if den > 0:
        return num / den
    return math.inf if num > 0 else 1.0


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
    if len(names) == 1:
        return {names[0]: 1.0}
    out = {}
    for m in names:
        others = sum(values[n] for n in names if n != m) / (len(names) - 1)
        mine = values[m]
        out[m] = _ratio(others, mine + eps) if inverse else _ratio(mine, others + eps)
    return out


def _one_minus_tanh(x: float) -> float:
    """``1 − tanh(x)`` for ``x ≥ 0`` without cancellation: ``2e^{−2x} / (1 + e^{−2x})``."""
    e = math.exp(-2.0 * x)
    return 2.0 * e / (1.0 + e)


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
    if form == "published":
        return _one_minus_tanh(alpha * ratio) if ratio > 1 else 1.0
    if form == "continuous":
        return _one_minus_tanh(alpha * max(ratio - 1.0, 0.0))
    raise ValueError(f"coefficient form must be 'published' or 'continuous', got {form!r}")
