"""Validation of method hyper-parameters: one helper that every constructor calls.

Config files hand us strings and numbers of every kind (``"false"``, ``1.7``, ``True``); each
hyper-parameter is checked for its exact type and range, so a typo is an error at
construction, never a silently different method.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

__all__ = ["check"]

Kind = Literal["bool", "int", "float", "str", "any"]


def _type_ok(value: Any, kind: Kind) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    return True


_WHAT = {
    "bool": "a bool",
    "int": "an int",
    "float": "a number",
    "str": "a string",
    "any": "a value",
}


def check(
    name: str,
    value: Any,
    kind: Kind,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    options: Sequence[Any] | None = None,
    optional: bool = False,
) -> Any:
    """Check one hyper-parameter and return it in canonical form.

    Args:
        name: The hyper-parameter's name, used in errors.
        value: The value given.
        kind: ``"bool"`` (only ``True``/``False``), ``"int"`` (an int, not a bool),
            ``"float"`` (an int or float, not a bool, finite; returned as ``float``),
            ``"str"`` or ``"any"``.
        low: Smallest allowed value (inclusive unless ``low_open``).
        high: Largest allowed value (inclusive).
        low_open: Exclude ``low`` itself.
        options: The allowed values (compared with ``==`` after the type check).
        optional: Allow ``None`` (returned as is).

    Returns:
        ``value``, as a ``float`` for ``kind="float"``.

    Raises:
        TypeError: If the value has the wrong type (e.g. the string ``"false"`` for a bool).
        ValueError: If it is not finite, out of range, or not one of ``options``.
    """
    if value is None and optional:
        return None
    if not _type_ok(value, kind):
        extra = " or None" if optional else ""
        raise TypeError(
            f"hyper-parameter {name} must be {_WHAT[kind]}{extra}, got {value!r} "
            f"({type(value).__name__})"
        )
    if kind == "float":
        if not math.isfinite(value):
            raise ValueError(f"hyper-parameter {name} must be finite, got {value!r}")
        value = float(value)
    if options is not None and value not in options:
        raise ValueError(f"hyper-parameter {name} must be one of {tuple(options)}, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        bound = f"> {low}" if low_open else f">= {low}"
        raise ValueError(f"hyper-parameter {name} must be {bound}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"hyper-parameter {name} must be <= {high}, got {value!r}")
    return value
