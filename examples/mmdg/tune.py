"""Grid search of a config's hyper-parameters, ranked by SOURCE-validation accuracy only.

The held-out domain's accuracy is printed for information but never used to rank, so the
shipped configs are chosen the way a user without target data would choose them.

Run from ``examples/``::

    python -m mmdg.tune --data mmdg/data/av-digits-dg --config mmdg/configs/gmp.yaml \\
        --grid method.alpha_k=0.5,1,2 method.alpha_p=0.5,1,2 --seeds 1
"""

from __future__ import annotations

import argparse
import copy
import itertools
import statistics
from collections.abc import Sequence
from typing import Any

import torch

from .compare import run_comparison
from .train import RunConfig, load_config

__all__ = ["expand_grid", "main"]


def _parse_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"null": None, "true": True, "false": False}.get(text, text)


def expand_grid(base: RunConfig, grid: Sequence[str]) -> list[RunConfig]:
    """One config per point of the grid ``section.key=v1,v2,...``."""
    axes = []
    for item in grid:
        path, _, values = item.partition("=")
        section, _, key = path.partition(".")
        if not key or section not in ("method", "model", "loss", "train"):
            raise ValueError(f"grid entries look like method.alpha=0.5,1 (got {item!r})")
        axes.append([(section, key, _parse_value(v)) for v in values.split(",")])
    out = []
    for point in itertools.product(*axes):
        cfg = copy.deepcopy(base)
        if isinstance(cfg.method, str):
            cfg.method = {"method": cfg.method}
        for section, key, value in point:
            getattr(cfg, section)[key] = value
        cfg.name = " ".join(f"{s}.{k}={v}" for s, k, v in point) or base.name
        out.append(RunConfig(**vars(cfg)))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tune a config on source validation only.")
    parser.add_argument("--data", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--grid", nargs="+", required=True)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--targets", nargs="*", default=None)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    args = parser.parse_args(argv)
    if args.device == "cpu":
        torch.set_flush_denormal(True)
    configs = expand_grid(load_config(args.config).with_overrides(epochs=args.epochs), args.grid)
    results = run_comparison(
        args.data,
        configs,
        seeds=range(args.seeds),
        targets=args.targets,
        device=args.device,
        workers=args.workers,
        threads=args.threads,
    )
    rows = []
    for cfg in configs:
        runs = [r for r in results if r.config == cfg.name]
        val = statistics.fmean(r.val["fused"] for r in runs)
        test = statistics.fmean(r.test["fused"] for r in runs)
        rows.append((val, test, cfg.name))
    rows.sort(reverse=True)
    print("| rank | setting | source val (ranks) | held-out (not used) |")
    print("|---|---|---|---|")
    for i, (val, test, name) in enumerate(rows, 1):
        print(f"| {i} | {name} | {val:.3f} | {test:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
