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


#: Methods over k objectives of one block (the multi-task setting).
MULTITASK = ("sum", "mean", "pcgrad", "cagrad")


def multimodal_cases(k_rows: int) -> dict[str, tuple[gs.Method, list[str], dict]]:
    """The multimodal methods on two modality blocks: GMP (cls, dom) and OGM-GE (one loss)."""
    conf = {"video": 0.4, "audio": 0.8}
    dom = {"video": 0.3, "audio": 0.7}
    gmp_signals = {m: {"cls": conf[m], "dom": dom[m]} for m in conf}
    ogm_signals = {m: {"loss": conf[m]} for m in conf}
    return {
        "gmp": (gs.GMP(), ["cls", "dom"], gmp_signals),
        "ogmge(ge=False)": (gs.OGMGE(ge=False), ["loss"], ogm_signals),
        "ogmge": (gs.OGMGE(), ["loss"], ogm_signals),
    }


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
    print("\nMulti-task: one block of k rows; ratio = method time / one pass (G.sum(0))")
    header = f"{'k':>3} {'one pass (ms)':>14} " + " ".join(f"{n:>8}" for n in MULTITASK)
    print(header)
    print("-" * len(header))
    for k in args.ks:
        G = torch.randn(k, args.p, generator=gen, device=device, dtype=dtype)
        names = [f"t{i}" for i in range(k)]
        base = timeit(lambda G=G: G.sum(0), device, args.repeat)
        ratios = []
        for name in MULTITASK:
            method = gs.build(name)

            def step(method=method, G=G, names=names) -> object:
                return method.apply(gs.GradientTable.from_matrices({"block": G}, names))

            ratios.append(timeit(step, device, args.repeat) / base)
        print(f"{k:>3} {base * 1e3:>14.2f} " + " ".join(f"{r:>7.2f}x" for r in ratios))
        del G
    print("\nMultimodal: two modality blocks of P/2 parameters each; ratio = method time / one")
    print("pass over both blocks' rows (each block's G.sum(0))")
    for k_rows, label in ((2, "gmp"), (1, "ogmge")):
        blocks = {
            m: torch.randn(k_rows, args.p // 2, generator=gen, device=device, dtype=dtype)
            for m in ("video", "audio")
        }
        base = timeit(lambda b=blocks: [g.sum(0) for g in b.values()], device, args.repeat)
        for name, (method, names, signals) in multimodal_cases(k_rows).items():
            if not name.startswith(label):
                continue

            def step(method=method, names=names, signals=signals, b=blocks) -> object:
                return method.apply(gs.GradientTable.from_matrices(b, names), signals)

            ratio = timeit(step, device, args.repeat) / base
            print(f"  {name:<16} rows/block {k_rows}  one pass {base * 1e3:8.2f} ms  {ratio:6.2f}x")
        del blocks


if __name__ == "__main__":
    main()
