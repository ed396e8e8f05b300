"""Puts ``examples/`` on ``sys.path`` so that the MMDG example imports as ``mmdg``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))

from mmdg.data_builders.synthetic import write_synthetic_dataset  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic feature folder (3 domains, 4 classes), shared by a test module."""
    root = tmp_path_factory.mktemp("tiny")
    write_synthetic_dataset(
        root, dims=(12, 8), n_domains=3, n_classes=4, n_per_domain=80, latent=4, seed=0
    )
    return root


@pytest.fixture(autouse=True)
def _restore_denormals():
    """The example flushes denormals on CPU for speed; keep that out of the other tests
    (Hypothesis refuses to generate floats while subnormals are flushed)."""
    yield
    torch.set_flush_denormal(False)
