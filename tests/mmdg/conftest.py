"""Puts ``examples/`` on ``sys.path`` so that the MMDG example imports as ``mmdg``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))


@pytest.fixture(autouse=True)
def _restore_denormals():
    """The example flushes denormals on CPU for speed; keep that out of the other tests
    (Hypothesis refuses to generate floats while subnormals are flushed)."""
    yield
    torch.set_flush_denormal(False)
