"""Signals: optional per-(block, objective) scalars that drive some methods.

A signal map is ``{block: {objective: value}}``, e.g. ``{"video": {"cls": 0.81, "dom": 0.40}}``
for a modality's semantic and domain confidence. Values are Python numbers or 0-d tensors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from .transfer import to_device

__all__ = ["SignalError", "SignalMap", "require_signal", "signal_on_device"]

SignalMap = Mapping[str, Mapping[str, "float | torch.Tensor"]]
"""Signals keyed by block, then objective: ``{block: {objective: scalar}}``."""


class SignalError(ValueError):
    """A signal a method needs is missing or invalid."""


def _lookup(signals: SignalMap | None, block: str, objective: str, where: str) -> object:
    if signals is None:
        raise SignalError(
            f"{where} is missing: pass signals={{{block!r}: {{{objective!r}: value}}}}"
        )
    per_block = signals.get(block)
    if per_block is None:
        raise SignalError(f"{where} is missing: signals has no block {block!r}")
    if objective not in per_block:
        raise SignalError(f"{where} is missing: signals[{block!r}] has {sorted(per_block)} only")
    return per_block[objective]


def signal_on_device(
    signals: SignalMap | None,
    block: str,
    objective: str,
    what: str,
    device: torch.device,
    *,
    low: float | None = None,
    high: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one signal as a float64 0-d tensor on ``device``, without host synchronisation.

    What the host can check (missing, not a scalar, not a number) raises as in
    `require_signal`; what only the value tells (not finite, out of range) comes back as a
    flag, for a step that skips instead of raising.

    Returns:
        ``(value, valid)``: the value (0 where invalid) and a 0-d boolean tensor.

    Raises:
        SignalError: If the signal is missing, not a scalar or not a number.
    """
    where = f"signal {what!r} for block {block!r}, objective {objective!r}"
    raw = _lookup(signals, block, objective, where)
    if isinstance(raw, torch.Tensor):
        if raw.numel() != 1:
            raise SignalError(f"{where} must be a scalar, got shape {tuple(raw.shape)}")
        if not (raw.is_floating_point() or raw.dtype in (torch.int32, torch.int64)):
            raise SignalError(f"{where} must be a real number, got dtype {raw.dtype}")
        value = to_device(raw.detach().reshape(()).to(torch.float64), device)
    elif isinstance(raw, (int, float)) and not isinstance(raw, bool):
        value = torch.full((), float(raw), dtype=torch.float64, device=device)
    else:
        raise SignalError(f"{where} must be a number, got {type(raw).__name__}")
    valid = torch.isfinite(value)
    if low is not None:
        valid = valid & (value >= low)
    if high is not None:
        valid = valid & (value <= high)
    return torch.where(valid, value, torch.zeros_like(value)), valid


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
    raw = _lookup(signals, block, objective, where)
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
