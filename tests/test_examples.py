"""Every example script runs: the demos in a tiny configuration, every CLI with --help."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
CLI_MODULES = sorted(
    f"mmdg.{p.stem}"
    for p in (EXAMPLES / "mmdg").glob("*.py")
    if "def main(" in p.read_text() and p.stem != "__init__"
)
SCRIPTS = sorted(p for p in EXAMPLES.rglob("*.py") if "mmdg" not in p.parts)


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_every_mmdg_module_with_a_main_is_a_cli() -> None:
    assert {"mmdg.avdigits", "mmdg.compare", "mmdg.extract", "mmdg.tune"} <= set(CLI_MODULES)


@pytest.mark.slow
@pytest.mark.parametrize("module", CLI_MODULES)
def test_cli_prints_its_help(module: str) -> None:
    result = _run([sys.executable, "-m", module, "--help"], EXAMPLES)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


#: Per standalone example script: launcher arguments, small arguments, expected output.
TINY = {
    "multitask_demo.py": ([], ["--steps", "3", "--seeds", "1"], "| method |"),
    "distributed/train.py": (
        ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"],
        ["--steps", "2"],
        "ranks in sync: True",
    ),
}


def _key(script: Path) -> str:
    return str(script.relative_to(EXAMPLES))


def test_every_standalone_script_has_a_tiny_configuration() -> None:
    assert {_key(p) for p in SCRIPTS} <= set(TINY)


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=_key)
def test_standalone_script_runs(script: Path) -> None:
    launcher, args, expected = TINY[_key(script)]
    result = _run([sys.executable, *launcher, str(script), *args], ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert expected in result.stdout


@pytest.mark.slow
def test_minimal_mmdg_loop_trains() -> None:
    result = _run([sys.executable, "-m", "mmdg.minimal", "--epochs", "1"], EXAMPLES)
    assert result.returncode == 0, result.stderr[-3000:]
    accuracy = float(result.stdout.strip().rsplit(" ", 1)[-1])
    assert 0.1 < accuracy <= 1.0  # above chance after one epoch (10 classes)
