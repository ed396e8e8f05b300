"""Confidence ratios and OGM-style modulation coefficients, shared by OGM-GE and GMP."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import torch

__all__ = [
    "CoefficientForm",
    "coefficient_vector",
    "discrepancy_ratios",
    "modulation_coefficient",
    "ratio_vector",
]

CoefficientForm = Literal["published", "continuous"]


def ratio_vector(values: torch.Tensor, *, eps: float = 0.0, inverse: bool = False) -> torch.Tensor:
    """Each entry of ``values`` relative to the mean of the others, in torch (any device, no
    host synchronisation); the math of `discrepancy_ratios`.

    Args:
        values: ``(M,)`` per-member scalars.
        eps: Added to the denominator.
        inverse: Flip the fraction.

    Returns:
        ``(M,)`` ratios; all ones for one member; ``inf`` for a zero denominator (1 when the
        numerator is zero too), never NaN.
    """
    members = values.shape[0]
    if members == 1:
        return torch.ones_like(values)
    # The others' mean as one product with a 0/1 mask: for two members it is exactly the
    # other value (a sum minus self would round).
    mask = 1 - torch.eye(members, dtype=values.dtype, device=values.device)
    others = (mask @ values) / (members - 1)
    num, den = (others, values + eps) if inverse else (values, others + eps)
    positive = den > 0
    safe = torch.where(positive, den, torch.ones_like(den))
    fallback = torch.where(num > 0, torch.full_like(num, math.inf), torch.ones_like(num))
    return torch.where(positive, num / safe, fallback)


def coefficient_vector(
    ratio: torch.Tensor, alpha: float, form: CoefficientForm = "published"
) -> torch.Tensor:
    """`modulation_coefficient` of every entry of ``ratio``, in torch (no host sync)."""
    if form not in ("published", "continuous"):
        raise ValueError(f"coefficient form must be 'published' or 'continuous', got {form!r}")
    if alpha == 0:
        return torch.ones_like(ratio)
    if form == "published":
        return torch.where(ratio > 1, _one_minus_tanh(alpha * ratio), torch.ones_like(ratio))
    return _one_minus_tanh(alpha * (ratio - 1).clamp_min(0))


def _one_minus_tanh(x: torch.Tensor) -> torch.Tensor:
    """``1 − tanh(x)`` for ``x ≥ 0`` without cancellation: ``2e^{−2x} / (1 + e^{−2x})``."""
    e = torch.exp(-2.0 * x)
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
    vector = torch.tensor([float(values[m]) for m in names], dtype=torch.float64)
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
    value = torch.tensor([float(ratio)], dtype=torch.float64)
    return float(coefficient_vector(value, alpha, form)[0])
