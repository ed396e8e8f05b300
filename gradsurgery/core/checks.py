"""Validation of method hyper-parameters, shared by every method's constructor."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["nonnegative", "one_of"]


def nonnegative(name: str, value: Any) -> float:
    """Return ``value`` as a float, or raise ``ValueError`` unless it is a finite number ≥ 0."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def one_of(name: str, value: Any, options: Sequence[Any]) -> None:
    """Raise ``ValueError`` naming the valid options unless ``value`` is one of them."""
    if value not in options:
        raise ValueError(f"{name} must be one of {tuple(options)}, got {value!r}")
