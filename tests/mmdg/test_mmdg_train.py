"""The MMDG example's training loop, comparison CLI and GPU script, on small CPU data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmdg.compare import main as compare_main
from mmdg.features import load_dg_splits
from mmdg.train import RunConfig, load_config, train_run

import gradsurgery as gs

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mmdg"
CONFIGS = sorted((EXAMPLE / "configs").glob("*.*"))


def test_the_shipped_configs_cover_the_compared_methods() -> None:
    methods = set()
    for path in CONFIGS:
        cfg = load_config(path)
        methods.add(cfg.method if isinstance(cfg.method, str) else cfg.method["method"])
    assert methods <= set(gs.available())
    assert {"sum", "gmp", "ogmge", "pcgrad", "cagrad", "mmpareto", "agm", "pmr", "cggm"} <= methods
    assert {p.suffix for p in CONFIGS} >= {".yaml", ".toml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_smoke_run_of_every_config(tiny: Path, path: Path) -> None:
    torch.set_flush_denormal(True)
    cfg = load_config(path).with_overrides(epochs=2, batch_size=32)
    result = train_run(cfg, load_dg_splits(tiny, target="d0"), seed=0)
    assert result.config == path.stem and result.target == "d0"
    for split in (result.val, result.test):
        assert set(split) == {"fused", "m1", "m2"}
        assert all(0.0 <= v <= 1.0 for v in split.values())
    assert len(result.trajectory) == 2
    assert {"rho/m1", "sigma/m1", "conflict/m1"} <= set(result.trajectory[0])


def test_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: sum\noptimizer: sgd\n")
    with pytest.raises(ValueError, match=r"unknown keys \['optimizer'\]"):
        load_config(bad)
    with pytest.raises(ValueError, match=r"unknown model keys \['depth'\]"):
        RunConfig("x", "sum", model={"depth": 3})
    with pytest.raises(KeyError, match="unknown method 'adam'"):
        RunConfig("x", "adam")
    with pytest.raises(ValueError, match="batch_size 4096 is larger than the 2160"):
        train_run(
            RunConfig("x", "sum", train={"batch_size": 4096}),
            load_dg_splits(EXAMPLE / "data" / "av-digits-dg", target="en"),
            seed=0,
        )
    with pytest.raises(ValueError, match=r"modalities \['depth'\] are not in the data"):
        train_run(
            RunConfig("x", "sum", modalities=["depth"]),
            load_dg_splits(EXAMPLE / "data" / "av-digits-dg", target="en"),
            seed=0,
        )


def test_compare_writes_table_csv_json_and_plots(tiny: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    configs = [str(EXAMPLE / "configs" / n) for n in ("joint.yaml", "gmp.yaml")]
    code = compare_main(
        [
            "--data",
            str(tiny),
            "--configs",
            *configs,
            "--seeds",
            "2",
            "--targets",
            "d1",
            "--epochs",
            "1",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    table = (out / "results.md").read_text()
    for name in ("joint", "gmp", "m1 only", "m2 only"):
        assert f"| {name} |" in table
    assert len((out / "results.csv").read_text().splitlines()) == 1 + 4 * 2
    assert len(json.loads((out / "results.json").read_text())) == 8
    for png in ("accuracy.png", "trajectories.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    merged = tmp_path / "merged"
    compare_main(
        [
            "--data",
            str(tiny),
            "--merge",
            str(out / "results.json"),
            "--out",
            str(merged),
            "--no-plots",
        ]
    )
    assert (merged / "results.md").read_text() == table


def test_gpu_script_runs_the_same_path_on_cpu(tiny: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    env = {
        **os.environ,
        "DEVICE": "cpu",
        "DATA": str(tiny),
        "ACOUSTIC_DATA": str(tiny),
        "CONFIGS": "mmdg/configs/joint.yaml mmdg/configs/agm.yaml mmdg/configs/cagrad.toml",
        "EPOCHS": "1",
        "SEEDS": "1",
        "BATCH": "64",
        "OUT_DIR": str(tmp_path / "gpu"),
        "PYTHON": sys.executable,
    }
    done = subprocess.run(
        ["bash", str(EXAMPLE / "gpu_check.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("held-out domains d0, d1, d2") == 2  # both sets
    assert "== acoustic ==" in done.stdout and "== language ==" in done.stdout
    assert done.stdout.rstrip().splitlines()[-1].startswith("wrote")
