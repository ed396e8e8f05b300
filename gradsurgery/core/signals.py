"""Signals: optional per-(block, objective) scalars that drive some methods.

A signal map is ``{block: {objective: value}}``, e.g. ``{"video": {"cls": 0.81, "dom": 0.40}}``
for a modality's semantic and domain confidence. Values are Python numbers or 0-d tensors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

__all__ = ["SignalError", "SignalMap", "require_signal"]

SignalMap = Mapping[str, Mapping[str, "float | torch.Tensor"]]
"""Signals keyed by block, then objective: ``{block: {objective: scalar}}``."""


class SignalError(ValueError):
    """A signal a method needs is missing or invalid."""


def require_signal(
    signals: SignalMap | None,
    block: str,
    objective: str,
    what: str,
    *,
    low: float | None = None,
    high: float | None = None,
) -> float:
    """Read one signal as a float, or raise an error naming block, objective and signal.

    Args:
        signals: The signal map passed by the user (may be ``None``).
        block: The block whose signal is needed.
        objective: The objective whose signal is needed.
        what: What the signal means, e.g. ``"semantic confidence"``; used in errors.
        low: Smallest allowed value (inclusive), if any.
        high: Largest allowed value (inclusive), if any.

    Returns:
        The signal's value.

    Raises:
        SignalError: If the signal is missing, not a scalar, not finite, or out of range.
    """
    where = f"signal {what!r} for block {block!r}, objective {objective!r}"
    if signals is None:
        raise SignalError(
            f"{where} is missing: pass signals={{{block!r}: {{{objective!r}: value}}}}"
        )
    per_block = signals.get(block)
    if per_block is None:
        raise SignalError(f"{where} is missing: signals has no block {block!r}")
    if objective not in per_block:
        raise SignalError(f"{where} is missing: signals[{block!r}] has {sorted(per_block)} only")
    raw = per_block[objective]
    if isinstance(raw, torch.Tensor):
        if raw.numel() != 1:
            raise SignalError(f"{where} must be a scalar, got shape {tuple(raw.shape)}")
        value = float(raw.detach().reshape(()).item())
    elif isinstance(raw, (int, float)) and not isinstance(raw, bool):
        value = float(raw)
    else:
        raise SignalError(f"{where} must be a number, got {type(raw).__name__}")
    if not math.isfinite(value):
        raise SignalError(f"{where} is not finite ({value})")
    if (low is not None and value < low) or (high is not None and value > high):
        raise SignalError(f"{where} is {value}, outside [{low}, {high}]")
    return value
