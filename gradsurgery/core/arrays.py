"""Small decisions written once for NumPy arrays and torch tensors.

A decision on the host runs in NumPy, where an operation on a few numbers costs about a
microsecond (several times less than torch's per-call overhead); the same decision on a
device runs in torch there, with no host synchronisation. Code that uses only what both
share — operators, indexing, and the functions of the namespace `namespace` returns
(``where``, ``stack``, ``exp``, ``sqrt``, ``ones_like``, ...) — serves both.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import torch

__all__ = ["namespace"]


def namespace(array: Any) -> ModuleType:
    """``numpy`` for a NumPy array (or scalar), ``torch`` for a tensor."""
    return torch if isinstance(array, torch.Tensor) else np
