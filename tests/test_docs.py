"""The documentation: its code snippets run, its API reference is complete, and it builds.

Runnable snippets live in ``docs/snippets/*.py`` and are pulled into the pages with
``--8<-- "docs/snippets/NAME.py"`` (pymdownx.snippets), so what the site shows is what runs here.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import runpy
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import gradsurgery as gs

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SNIPPETS = sorted((DOCS / "snippets").glob("*.py"))
INCLUDE = re.compile(r'^\s*-+8<-+\s+"([^"]+)"\s*$', re.MULTILINE)


def _pages() -> dict[Path, str]:
    return {p: p.read_text(encoding="utf-8") for p in DOCS.rglob("*.md")}


def test_snippets_exist() -> None:
    assert SNIPPETS, "no snippets found in docs/snippets"


def test_every_snippet_is_shown_and_every_include_exists() -> None:
    included: set[Path] = set()
    for page, text in _pages().items():
        for target in INCLUDE.findall(text):
            path = ROOT / target
            assert path.is_file(), f"{page.relative_to(DOCS)} includes a missing file: {target}"
            included.add(path.resolve())
    unused = [s.name for s in SNIPPETS if s.resolve() not in included]
    assert not unused, f"snippets not included by any page: {unused}"


@pytest.mark.parametrize("snippet", SNIPPETS, ids=lambda p: p.stem)
def test_snippet_runs(snippet: Path) -> None:
    rng_state = torch.get_rng_state()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            runpy.run_path(str(snippet), run_name="__main__")
    finally:
        torch.set_rng_state(rng_state)
    elapsed = time.perf_counter() - start
    # The snippets take a few seconds at most on a CPU; the bound is generous for loaded CI.
    assert elapsed < 20.0, f"{snippet.name} took {elapsed:.1f} s; keep doc snippets fast"


def _public_names() -> list[str]:
    names = [f"gradsurgery.{n}" for n in gs.__all__]
    return names + [f"gradsurgery.signals.{n}" for n in gs.signals.__all__]


def test_api_reference_lists_every_public_name() -> None:
    text = "\n".join(_pages().values())
    documented = set(re.findall(r"^:::\s+(\S+)", text, re.MULTILINE))
    missing = [n for n in _public_names() if n not in documented]
    assert not missing, f"add '::: NAME' entries to docs/api.md for: {missing}"


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[docs]')")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{output[-4000:]}"
    warnings = [line for line in output.splitlines() if re.match(r"\s*WARNING\b", line)]
    assert not warnings, "mkdocs printed warnings:\n" + "\n".join(warnings)
    assert (tmp_path / "index.html").is_file()
