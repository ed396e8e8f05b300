"""``benchmarks/engines.py --quick`` runs (the smoke form of the engine benchmark)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_engines", ROOT / "benchmarks" / "engines.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_engines"] = module
    spec.loader.exec_module(module)
    return module


def test_quick_step_times(capsys: pytest.CaptureFixture[str]) -> None:
    load().main(["--quick", "--no-memory", "--no-torchjd", "--threads", "1"])
    out = capsys.readouterr().out
    for line in ("table/pcgrad", "gramian/pcgrad", "representation/pcgrad", "Targets"):
        assert line in out


@pytest.mark.slow
def test_quick_memory_in_subprocesses(capsys: pytest.CaptureFixture[str]) -> None:
    load().main(["--quick", "--no-time", "--no-torchjd", "--threads", "1"])
    out = capsys.readouterr().out
    assert "target: gramian peak" in out
