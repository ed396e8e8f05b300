"""Config: build any method from a name or a ``{"method": name, **hyper}`` mapping."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from .core.method import Method
from .methods.basic import Mean, Sum
from .methods.cagrad import CAGrad
from .methods.gmp import GMP
from .methods.ogmge import OGMGE
from .methods.pcgrad import PCGrad

__all__ = ["available", "build", "register"]

_REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Register a `gradsurgery.Method` subclass under its ``name`` (usable as a
    class decorator for your own methods).

    Raises:
        ValueError: If the name is empty or already taken by another class.
    """
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"expected a Method subclass, got {cls!r}")
    name = cls.name
    if not name:
        raise ValueError(f"{cls.__name__} has no `name`")
    if _REGISTRY.get(name, cls) is not cls:
        raise ValueError(f"method name {name!r} is already registered to {_REGISTRY[name]!r}")
    _REGISTRY[name] = cls
    return cls


def available() -> list[str]:
    """The registered method names, sorted."""
    return sorted(_REGISTRY)


def hyperparameter_names(cls: type[Method]) -> list[str]:
    """The keyword-only constructor arguments of a method class."""
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def build(cfg: str | Mapping[str, Any], /, **overrides: Any) -> Method:
    """Build a method from a config.

    Args:
        cfg: A method name (``"pcgrad"``) or a mapping ``{"method": name, **hyper}`` as read
            from YAML/JSON (``{"method": "cagrad", "c": 0.4}``). Names are case-insensitive;
            ``-`` and ``_`` are ignored (``"OGM-GE"`` = ``"ogmge"``).
        **overrides: Hyper-parameters that take precedence over the mapping's.

    Returns:
        A new method object.

    Raises:
        KeyError: Unknown method (the message lists the available ones).
        TypeError: Unknown hyper-parameter (the message lists the valid ones).
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
    key = name.lower().replace("-", "").replace("_", "")
    cls = _REGISTRY.get(key)
    if cls is None:
        raise KeyError(f"unknown method {name!r}; available methods: {available()}")
    valid = hyperparameter_names(cls)
    unknown = sorted(set(hyper) - set(valid))
    if unknown:
        raise TypeError(
            f"unknown hyper-parameter(s) {unknown} for method {key!r}; valid: {valid or 'none'}"
        )
    return cls(**hyper)


for _cls in (Sum, Mean, PCGrad, CAGrad, OGMGE, GMP):
    register(_cls)
