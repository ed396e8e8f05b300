"""Time each method's combine step against one pass over the gradient matrix.

For k objectives and P parameters, the baseline is ``G.sum(0)``: one read of the ``(k, P)``
matrix. Each method is timed on a fresh gradient table (its Gramian is not cached), so the
ratio includes the Gramian, the method's ``k x k`` decisions and the final weighted pass.
Both are measured in the same run; ratios, not seconds, are what carry across machines.

Usage:
    python benchmarks/aggregate.py [--p 11000000] [--ks 2 4 8] [--repeat 7] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import gradsurgery as gs


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn: Callable[[], object], device: torch.device, repeat: int) -> float:
    """Median wall time of ``fn`` over ``repeat`` runs, after one warm-up."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def methods() -> dict[str, Callable[[int], tuple[gs.Method, list[str], dict | None]]]:
    """Methods to time: ``name -> k -> (method, objective names, signals)``."""
    out: dict[str, Callable[[int], tuple[gs.Method, list[str], dict | None]]] = {}
    for name in gs.available():
        out[name] = lambda k, name=name: (gs.build(name), [f"t{i}" for i in range(k)], None)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--p", type=int, default=11_000_000)
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator(device=device).manual_seed(0)
    print(f"P = {args.p:,}, dtype {args.dtype}, device {device}, median of {args.repeat}")
    makers = methods()
    header = f"{'k':>3} {'one pass (ms)':>14} " + " ".join(f"{n:>8}" for n in makers)
    print(header)
    print("-" * len(header))
    for k in args.ks:
        G = torch.randn(k, args.p, generator=gen, device=device, dtype=dtype)
        base = timeit(lambda G=G: G.sum(0), device, args.repeat)
        ratios = []
        for make in makers.values():
            method, names, signals = make(k)

            def step(method=method, names=names, signals=signals, G=G) -> object:
                table = gs.GradientTable.from_matrices({"block": G}, names)
                return method.apply(table, signals)

            ratios.append(timeit(step, device, args.repeat) / base)
        print(f"{k:>3} {base * 1e3:>14.2f} " + " ".join(f"{r:>7.2f}x" for r in ratios))


if __name__ == "__main__":
    main()
