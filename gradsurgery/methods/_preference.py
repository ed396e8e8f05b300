"""Preference vectors, shared by the weightings that take one (UPGrad, DualProj, Aligned-MTL,
ConFIG): validated at construction, matched to the number of objectives at each step."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..core.checks import check

__all__ = ["check_preference", "preference_array"]


def check_preference(value: Sequence[float] | None) -> tuple[float, ...] | None:
    """Validate a preference vector: ``None`` (all ones) or non-negative finite numbers.

    Returns:
        ``None`` or a tuple of floats (so that it compares and saves as plain data).

    Raises:
        TypeError: If it is not a list or tuple of numbers.
        ValueError: If it is empty, or an entry is negative or not finite.
    """
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        raise TypeError(
            "hyper-parameter preference must be a list or tuple of numbers or None, got "
            f"{value!r} ({type(value).__name__})"
        )
    if not value:
        raise ValueError("hyper-parameter preference must not be empty")
    return tuple(check(f"preference[{i}]", x, "float", low=0.0) for i, x in enumerate(value))


def preference_array(preference: tuple[float, ...] | None, k: int) -> np.ndarray:
    """The ``(k,)`` float64 preference for ``k`` objectives (all ones when ``None``).

    Raises:
        ValueError: If the preference has another length than ``k``.
    """
    if preference is None:
        return np.ones(k)
    if len(preference) != k:
        raise ValueError(
            f"the preference has {len(preference)} entries but the table has {k} objectives"
        )
    return np.array(preference, dtype=np.float64)
