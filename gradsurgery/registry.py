"""Config: build any method from a name or a ``{"method": name, **hyper}`` mapping.

Methods register themselves where they are defined (``@register``); names are normalised
the same way for registering and building: case-insensitive, ``-`` and ``_`` ignored.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any, TypeVar

from .core.method import Family, Kind, Method

__all__ = ["available", "build", "get", "normalize", "register"]

_REGISTRY: dict[str, type[Method]] = {}
_M = TypeVar("_M", bound=type[Method])
_FAMILIES = ("gramian", "cross_block", "loss", "elementwise")
_KINDS = ("multitask", "multimodal")


def normalize(name: str) -> str:
    """The registry key of a method name: ``"OGM-GE"`` → ``"ogmge"``."""
    return name.lower().replace("-", "").replace("_", "")


def register(cls: _M) -> _M:
    """Register a `gradsurgery.Method` subclass under its (normalised) ``name``; use it as a
    class decorator, for the library's methods and your own.

    Raises:
        TypeError: If ``cls`` is not a Method subclass.
        ValueError: If the name is empty or already taken by another class.
    """
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"expected a Method subclass, got {cls!r}")
    if not isinstance(cls.name, str) or not normalize(cls.name):
        raise ValueError(f"{cls.__name__} has no `name`")
    if not hasattr(cls, "family"):
        raise ValueError(
            f"{cls.__name__} declares no `family`; subclass one of gradsurgery.core.families"
        )
    key = normalize(cls.name)
    taken = _REGISTRY.get(key)
    # The same class defined again (a module reloaded) may replace itself.
    same = taken is not None and (taken.__module__, taken.__qualname__) == (
        cls.__module__,
        cls.__qualname__,
    )
    if taken is not None and not same:
        raise ValueError(f"method name {key!r} is already registered to {taken!r}")
    _REGISTRY[key] = cls
    return cls


def _load() -> None:
    importlib.import_module("gradsurgery.methods")


def available(
    *,
    kind: Kind | None = None,
    family: Family | None = None,
    objectives: int | None = None,
    on_device: bool | None = None,
) -> list[str]:
    """The registered method names, sorted, optionally filtered.

    Args:
        kind: Keep methods meant for ``"multitask"`` or ``"multimodal"`` training.
        family: Keep one family (``"gramian"``, ``"cross_block"``, ``"loss"``,
            ``"elementwise"``).
        objectives: Keep methods that take this many objectives.
        on_device: Keep methods that do (``True``) or do not (``False``) decide on the
            device without host synchronisation (``apply(..., sync=False)``).
    """
    _load()
    if kind is not None and kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    if family is not None and family not in _FAMILIES:
        raise ValueError(f"family must be one of {_FAMILIES}, got {family!r}")
    out = []
    for name, cls in _REGISTRY.items():
        if kind is not None and kind not in cls.kinds:
            continue
        if family is not None and cls.family != family:
            continue
        if on_device is not None and cls.on_device != on_device:
            continue
        if objectives is not None and not (
            cls.min_objectives <= objectives
            and (cls.max_objectives is None or objectives <= cls.max_objectives)
        ):
            continue
        out.append(name)
    return sorted(out)


def get(name: str) -> type[Method]:
    """The method class registered under ``name`` (normalised).

    Raises:
        KeyError: Unknown method (the message lists the available ones).
    """
    _load()
    cls = _REGISTRY.get(normalize(name))
    if cls is None:
        raise KeyError(f"unknown method {name!r}; available methods: {available()}")
    return cls


def build(cfg: str | Mapping[str, Any], /, **overrides: Any) -> Method:
    """Build a method from a config.

    Args:
        cfg: A method name (``"pcgrad"``) or a mapping ``{"method": name, **hyper}`` as read
            from YAML/JSON/TOML (``{"method": "cagrad", "c": 0.4}``). Names are
            case-insensitive; ``-`` and ``_`` are ignored (``"OGM-GE"`` = ``"ogmge"``).
        **overrides: Hyper-parameters that take precedence over the mapping's.

    Returns:
        A new method object.

    Raises:
        KeyError: Unknown method (the message lists the available ones).
        TypeError: Unknown hyper-parameter (the message lists the valid ones), or a value of
            the wrong type.
        ValueError: A value out of range.
    """
    if isinstance(cfg, str):
        name, hyper = cfg, {}
    elif isinstance(cfg, Mapping):
        if "method" not in cfg:
            raise KeyError(f"config has no 'method' key; available methods: {available()}")
        hyper = {k: v for k, v in cfg.items() if k != "method"}
        name = cfg["method"]
    else:
        raise TypeError(f"cfg must be a method name or a mapping, got {type(cfg).__name__}")
    if not isinstance(name, str):
        raise TypeError(f"method name must be a string, got {name!r}")
    hyper.update(overrides)
    cls = get(name)
    valid = _keyword_only(cls)
    unknown = sorted(set(hyper) - set(valid))
    if unknown:
        raise TypeError(
            f"unknown hyper-parameter(s) {unknown} for method {normalize(name)!r}; "
            f"valid: {valid or 'none'}"
        )
    return cls(**hyper)


def _keyword_only(cls: type[Method]) -> list[str]:
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
