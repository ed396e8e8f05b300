"""Every shell command the README, the docs and the example READMEs show runs here.

Each documented command is found in the Markdown sources and run in a smoke form: ``make``
targets as a dry run (the target and its recipe exist), ``pip install`` lines against the
extras ``pyproject.toml`` defines, Python commands with their documented arguments plus
smaller sizes appended (argparse lets later flags win). A new documented command that this
file does not know how to shrink fails the test, so it cannot go untested.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import torch

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").rglob("*.md")),
    *sorted((ROOT / "examples").rglob("*.md")),
]

#: Arguments appended to shrink a documented run to a smoke run, by script or module.
SHRINK = {
    "benchmarks/aggregate.py": ["--p", "4096", "--repeat", "1", "--ks", "2"],
    "examples/multitask_demo.py": ["--steps", "3", "--seeds", "1"],
    "mmdg.compare": ["--seeds", "1", "--epochs", "1", "--targets", "en", "close", "--no-plots"],
    "mmdg.tune": ["--seeds", "1", "--epochs", "1", "--targets", "en", "close", "--workers", "1"],
    "mmdg.minimal": ["--epochs", "1"],
    "examples/distributed/train.py": ["--steps", "2"],
    "benchmarks/on_device.py": ["--p", "4096", "--repeat", "1", "--ks", "2"],
    "benchmarks/engines.py": ["--quick", "--no-torchjd", "--no-memory"],
    "benchmarks/bench.py": ["--quick", "--no-memory"],
    "benchmarks/mmdg_step.py": ["--repeat", "1"],
    "benchmarks/resnet.py": ["--ks", "2", "--repeat", "1", "--batch", "2", "--size", "16"],
}
#: Commands that need optional extras; run with --help when those are missing.
NEEDS = {"mmdg.avdigits": ("espeakng_loader", "sklearn"), "mmdg.acoustic": ("espeakng_loader",)}


def _commands() -> list[tuple[str, str, str]]:
    """``(source, cwd, command)`` for every line of every bash block (continuations joined)."""
    found = []
    for path in SOURCES:
        text = path.read_text()
        for block in re.findall(r"```(?:bash|sh|shell|console)\n(.*?)```", text, re.S):
            cwd = "."
            for raw in block.replace("\\\n", " ").splitlines():
                line = raw.split(" #")[0].strip()
                if not line or line.startswith("#"):
                    continue
                if line.startswith("cd "):
                    cwd = line[3:].strip()
                    continue
                found.append((str(path.relative_to(ROOT)), cwd, line))
    return found


COMMANDS = _commands()


def test_the_docs_show_commands() -> None:
    assert len(COMMANDS) >= 8


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


def _run(argv: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.mark.slow
@pytest.mark.parametrize(("source", "cwd", "command"), COMMANDS, ids=lambda v: str(v)[:60])
def test_documented_command_runs(source: str, cwd: str, command: str, tmp_path: Path) -> None:
    argv = shlex.split(command)
    where = ROOT / ("examples" if cwd == "examples" else ".")
    if argv[0] == "make":
        result = _run(["make", "-n", *argv[1:]], ROOT)
        assert result.returncode == 0, f"{source}: {command}: {result.stderr}"
        return
    if argv[:2] == ["pip", "install"]:
        extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
            "optional-dependencies"
        ]
        for arg in argv[2:]:
            for extra in re.findall(r"\[([\w,-]+)\]", arg):
                assert set(extra.split(",")) <= set(extras), f"{source}: {command}"
        return
    launcher: list[str] = []
    if argv[0] == "torchrun":  # the same launcher, on a free port of its own choosing
        nproc = [a for a in argv[1:] if a.startswith("--nproc")]
        launcher = ["-m", "torch.distributed.run", "--standalone", *nproc]
        argv = ["python", *[a for a in argv[1:] if not a.startswith("--nproc")]]
    assert argv[0] == "python", f"{source}: no smoke form for {command!r}"
    if argv[1] == "-m":
        target, args = argv[2], argv[3:]
        prefix = [sys.executable, "-m", target]
    else:
        target, args = argv[1], argv[2:]
        prefix = [sys.executable, *launcher, str(ROOT / target)]
    if target.startswith("mmdg."):
        where = ROOT / "examples"  # the example package lives there, as its README says
    cuda = ("--device" in args and args[args.index("--device") + 1] == "cuda") or "--amp" in args
    if cuda and not torch.cuda.is_available():
        pytest.skip(f"{command!r} needs CUDA")
    args = [x for a in args for x in (sorted(glob.glob(a, root_dir=where)) if "*" in a else [a])]
    missing = [m for m in NEEDS.get(target, ()) if not _importable(m)]
    if missing or target not in SHRINK:
        assert missing or target in NEEDS, f"{source}: no smoke form for {command!r}"
        result = _run([*prefix, "--help"], where)
        assert result.returncode == 0 and "usage" in result.stdout, result.stderr
        return
    args = [a if a != "../runs/mmdg" else str(tmp_path / "runs") for a in args]
    if "--out" in args:
        args[args.index("--out") + 1] = str(tmp_path / "out")
    result = _run([*prefix, *args, *SHRINK[target]], where, timeout=600)
    assert result.returncode == 0, f"{source}: {command}\n{result.stdout[-2000:]}\n{result.stderr}"
