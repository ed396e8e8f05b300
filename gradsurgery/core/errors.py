"""The library's exception and warning classes."""

from __future__ import annotations

__all__ = ["GradSurgeryWarning", "NonFiniteGradientError"]


class NonFiniteGradientError(FloatingPointError):
    """A gradient row holds NaN or Inf, or its squared norm overflows the Gramian's dtype."""


class GradSurgeryWarning(UserWarning):
    """Base class of every warning gradsurgery emits."""
