"""The benchmark scripts' own logic that a smoke run would not reach."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

import gradsurgery as gs

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def test_counterpart_that_cannot_be_built_is_left_out_with_the_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    aggregate = _load("aggregate")

    def needs_solver(k: int) -> object:
        raise ImportError("CAGradWeighting requires ['cvxpy'] to be installed.")

    case = aggregate.Case(make=lambda k: gs.build("cagrad"), torchjd=needs_solver)
    assert aggregate._counterpart("cagrad", case, 2) is None
    assert "cagrad: TorchJD's counterpart left out: CAGradWeighting requires" in (
        capsys.readouterr().out
    )
    built = aggregate.Case(make=lambda k: gs.build("sum"), torchjd=lambda k: torch.sum)
    assert aggregate._counterpart("sum", built, 2) is torch.sum
    assert aggregate._counterpart("gmp", aggregate.Case(make=lambda k: gs.GMP()), 2) is None
