"""Time the on-device step against the host path and one pass over the gradient rows.

For every method that decides on the device (``gradsurgery.available(on_device=True)``) and
each k: the combine step — Gramian, decision, weighted pass — with the decision on the host
(``sync=True``, the Gramian travels to the CPU in float64), on the device (``sync=False``)
and, with ``--compile``, that device step under ``torch.compile`` (``mode="reduce-overhead"``
on CUDA, which replays it as a CUDA graph). The baseline is one pass ``G.sum(0)`` over the
``(k, P)`` rows, measured in the same run; ratios, not seconds, carry across machines.
Multimodal methods get two modality blocks of ``P/2`` parameters each.

Target (issue: on-device step): on a GPU at ``P = 11M``, every on-device method's combine is
at most 3x one pass. On a CPU host and device are the same processor, so only the ratios of
the two paths mean something there.

Usage:
    python benchmarks/on_device.py [--device cuda] [--p 11000000] [--ks 2 4 8] [--compile [K ...]]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

import gradsurgery as gs
from gradsurgery.core.table import GradientTable
from gradsurgery.registry import get

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aggregate import timeit  # median seconds per call, synchronised

TARGET = 3.0


def _problem(
    name: str, k: int, p: int, device: torch.device
) -> tuple[dict[str, torch.Tensor], list[str], dict[str, dict[str, torch.Tensor]] | None]:
    """Rows, objective names and signals for one method at ``k`` objectives."""
    gen = torch.Generator(device=device).manual_seed(0)
    kinds = get(name).kinds
    if "multitask" in kinds:
        rows = {"trunk": torch.randn(k, p, generator=gen, device=device)}
        return rows, [f"t{i}" for i in range(k)], None
    objectives = ["cls", "dom"] if get(name).max_objectives == 2 else ["cls"]
    half = p // 2
    rows = {m: torch.randn(len(objectives), half, generator=gen, device=device) for m in "va"}
    conf = {"v": (0.9, 0.3), "a": (0.4, 0.6)}
    signals = {
        m: {o: torch.tensor(c, device=device) for o, c in zip(objectives, conf[m])} for m in "va"
    }
    return rows, objectives, signals


def _build(name: str) -> gs.Method:
    """The method with the settings that select its on-device path."""
    return gs.build({"method": name, **get(name).on_device_settings})


def _step(
    method: gs.Method,
    rows: dict[str, torch.Tensor],
    objectives: list[str],
    signals: dict[str, dict[str, torch.Tensor]] | None,
    sync: bool,
) -> Callable[[], object]:
    def run() -> object:
        table = GradientTable.from_matrices(rows, objectives)
        updates, _ = method.apply(table, signals, on_nonfinite="skip", sync=sync)
        return updates

    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--p", type=int, default=None, help="parameters (default 11M on GPU)")
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--compile",
        type=int,
        nargs="*",
        default=None,
        metavar="K",
        help="also time a compiled step (at these k only; all k when none are given)",
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    p = args.p or (11_000_000 if device.type == "cuda" else 1_000_000)
    mode = "reduce-overhead" if device.type == "cuda" else None
    print(f"device {device}, P = {p:,}, ratios to one pass G.sum(0) measured in this run")
    header = "| method | k | one pass ms | host × | device × |"
    header += " compiled × |" if args.compile is not None else ""
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    missed = []
    for name in gs.available(on_device=True):
        cls = get(name)
        ks = [k for k in args.ks if k >= cls.min_objectives]
        if cls.max_objectives is not None:
            ks = [min(cls.max_objectives, k) for k in ks if k <= cls.max_objectives] or [
                cls.max_objectives
            ]
        for k in sorted(set(ks)):
            rows, objectives, signals = _problem(name, k, p, device)
            k_rows = len(objectives)
            matrices = list(rows.values())
            baseline = timeit(lambda m=matrices: [x.sum(0) for x in m], device, args.repeat)
            cells = []
            for sync in (True, False):
                run = _step(_build(name), rows, objectives, signals, sync)
                cells.append(timeit(run, device, args.repeat) / baseline)
            if args.compile is not None:
                if not args.compile or k in args.compile:
                    run = _step(_build(name), rows, objectives, signals, False)
                    compiled = torch.compile(run, mode=mode)
                    cells.append(timeit(compiled, device, args.repeat) / baseline)
                else:
                    cells.append(float("nan"))
            best = min(c for c in cells[1:] if c == c)  # NaN: not measured
            if device.type == "cuda" and best > TARGET:
                missed.append(f"{name} k={k_rows}: {best:.2f}×")
            row = f"| {name} | {k_rows} | {baseline * 1e3:.3f} | "
            row += " | ".join(f"{c:.2f}" for c in cells) + " |"
            print(row, flush=True)
    if device.type == "cuda":
        verdict = "met" if not missed else "missed: " + ", ".join(missed)
        print(f"target: on-device combine ≤ {TARGET}× one pass at P = {p:,}: {verdict}")


if __name__ == "__main__":
    main()
