"""Every performance target, measured in one run, printed with its ratio and met / missed.

What runs (all on this machine, each ratio against a baseline measured in the same run):

* the combine step of every method against TorchJD's counterpart, ``k`` in {2, 4, 8, 16},
  at a realistic and a small ``P`` (``benchmarks/aggregate.py``);
* the multi-task MLP step times per engine and TorchJD's two paths, and the peak memory of
  the engines on a 20M-parameter trunk (``benchmarks/engines.py``);
* GMP's step on the MMDG example's model against the Sum step (``benchmarks/mmdg_step.py``).

Then the target table, and a plot of step time vs ``k`` (ratio to the plain step: plain,
ours per engine, TorchJD, and the floor ``(3 + k) / 3``) written to
``runs/bench/bench-steps.png`` (matplotlib; skipped with a message when it is missing).

Usage:
    python benchmarks/bench.py [--ks 2 4 8] [--repeat 5] [--threads 1] [--out runs/bench]
        [--quick] [--no-aggregate] [--no-memory] [--no-torchjd]
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aggregate
import engines
import mmdg_step

#: Issue targets on the multi-task MLP step (ratio to the plain step).
EXACT_PCGRAD = {4: 2.8, 8: 4.5}
REPRESENTATION = 1.3
MEMORY = 1.3


def plot(results: dict[int, dict[str, float]], path: Path, title: str) -> str:
    """Step time (ratio to the plain step) vs ``k``; returns what was written or why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot (pip install matplotlib)"
    ks = sorted(results)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(ks, [1.0] * len(ks), "k-", label="plain sum(losses).backward()")
    ax.plot(ks, [(3 + k) / 3 for k in ks], "k:", label="floor (3 + k) / 3")
    styles = {"table": "s-", "gramian": "o-", "representation": "^-"}
    for name in results[ks[0]]:
        if name == "plain ms":
            continue
        style = "x--" if name.startswith("torchjd") else styles.get(name.split("/")[0], ".-")
        ax.plot(ks, [results[k][name] for k in ks], style, label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("k (objectives)")
    ax.set_ylabel("step time / plain step")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"plot written to {path}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--copy-plot", type=Path, help="also copy the plot here")
    parser.add_argument("--aggregate-p", type=int, nargs="+", default=[1_000_000, 10_000])
    parser.add_argument("--aggregate-ks", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--no-aggregate", action="store_true", help="skip the combine table")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory table")
    parser.add_argument("--no-torchjd", action="store_true", help="leave TorchJD out")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.no_torchjd:
        aggregate.HAVE_TORCHJD = False
        engines.HAVE_TORCHJD = False
    widths, batch, mem_widths, mem_k, mmdg_repeat = (
        [256, 1024, 1024, 1024],
        256,
        [256, 2560, 2560, 2560, 2560],
        8,
        21,
    )
    if args.quick:
        widths, batch, args.ks, args.repeat = [16, 32, 32], 8, [2, 4], 1
        mem_widths, mem_k, mmdg_repeat = [16, 64, 64], 2, 1
        args.aggregate_p, args.aggregate_ks = [4096], [2]
        if args.out == Path("runs/bench"):
            args.out = Path("runs/bench/quick")
    started = time.perf_counter()
    targets: list[tuple[str, str, bool | None]] = []

    # Issue 10: combine step per method vs TorchJD.
    if not args.no_aggregate:
        worst: dict[str, tuple[float, list[str]]] = {}
        compared = slow = 0
        for p in args.aggregate_p:
            print(
                f"\n== Combine step, P = {p:,}, {args.threads} thread(s), median of "
                f"{args.repeat}; ° = does not read the Gramian"
            )
            rows = aggregate.multitask_table(
                p, args.aggregate_ks, args.repeat, torch.device("cpu"), torch.float32, None
            )
            for name, k, _, _, ratio, gram in rows:
                if gram and ratio is not None:
                    compared += 1
                    if ratio > 1.0:
                        slow += 1
                        top, where = worst.get(name, (0.0, []))
                        worst[name] = (max(top, ratio), [*where, f"k={k}/P={p:.0e}"])
        if compared:
            detail = "; ".join(
                f"{name} {top:.2f}x ({', '.join(where)})"
                for name, (top, where) in sorted(worst.items(), key=lambda kv: -kv[1][0])
            )
            targets.append(
                (
                    "no Gramian method slower than TorchJD's counterpart at k <= 16",
                    f"{compared - slow}/{compared} (method, k, P) not slower"
                    + (f"; slower (worst ratio, where): {detail}" if detail else ""),
                    not slow,
                )
            )

    # Issue 11: step times on the multi-task MLP.
    params = sum(a * b + b for a, b in itertools.pairwise(widths))
    title = (
        f"trunk {'-'.join(map(str, widths))} ({params / 1e6:.2f}M), batch {batch}, "
        f"{args.threads} thread(s), CPU"
    )
    print(f"\n== Step time: {title}; ratio = step / plain sum(losses).backward() step")
    results = engines.time_table(widths, batch, args.ks, args.repeat)
    names = [n for n in results[args.ks[0]] if n != "plain ms"]
    width = max(len(n) for n in names)
    print(f"{'configuration':<{width}} " + " ".join(f"{'k=' + str(k):>8}" for k in args.ks))
    print(
        f"{'plain (ms)':<{width}} " + " ".join(f"{results[k]['plain ms']:>8.1f}" for k in args.ks)
    )
    for name in names:
        print(f"{name:<{width}} " + " ".join(f"{results[k][name]:>7.2f}x" for k in args.ks))
    for k, bound in EXACT_PCGRAD.items():
        if k not in results:
            continue
        r = results[k]["gramian/pcgrad"]
        targets.append(
            (f"exact PCGrad (gramian engine) <= {bound}x plain at k={k}", f"{r:.2f}x", r <= bound)
        )
        for jd in ("torchjd autojac/pcgrad", "torchjd autogram/pcgrad"):
            if jd in results[k]:
                t = results[k][jd]
                targets.append(
                    (f"exact PCGrad faster than {jd} at k={k}", f"{r:.2f}x vs {t:.2f}x", r < t)
                )
    k_rep = 8 if 8 in results else max(results)
    for label in ("pcgrad", "mgda"):
        name = f"representation/{label}"
        if name in results[k_rep]:
            r = results[k_rep][name]
            targets.append(
                (
                    f"representation-level {label} <= {REPRESENTATION}x plain at k={k_rep}",
                    f"{r:.2f}x",
                    r <= REPRESENTATION,
                )
            )

    # Issue 11: peak memory of the gramian engine.
    peaks: dict[str, float] = {}
    if not args.no_memory:
        configs = ["plain", "gramian/pcgrad", "representation/pcgrad", "table/pcgrad"]
        if engines.HAVE_TORCHJD:
            configs += ["torchjd autojac/pcgrad", "torchjd autogram/pcgrad"]
        mem_params = sum(a * b + b for a, b in itertools.pairwise(mem_widths))
        print(
            f"\n== Peak memory: trunk {'-'.join(map(str, mem_widths))} ({mem_params / 1e6:.1f}M), "
            f"batch {batch}, k={mem_k}, peak RSS of a fresh process (MALLOC_MMAP_THRESHOLD_=1 MiB)"
        )
        peaks = engines.memory_table(mem_widths, batch, mem_k, configs, args.threads, False)
        for config in configs:
            print(
                f"  {config:<24} {peaks[config]:>8.0f} MiB  {peaks[config] / peaks['plain']:.2f}x"
            )
        r = peaks["gramian/pcgrad"] / peaks["plain"]
        targets.append(
            (
                f"gramian engine peak memory <= {MEMORY}x plain at k={mem_k} "
                f"({mem_params / 1e6:.0f}M trunk)",
                f"{r:.2f}x",
                r <= MEMORY,
            )
        )

    # Issue 11: GMP on the MMDG model.
    base, mm = mmdg_step.ratios(mmdg_repeat)
    print(f"\n== MMDG model step (batch 64), median of {mmdg_repeat} pairs; Sum step {base:.2f} ms")
    for name, r in mm.items():
        print(f"  {name:<16} {r:5.2f}x")
    targets.append(
        (
            f"MMDG: GMP exact <= {mmdg_step.EXACT_TARGET}x the Sum step",
            f"{mm['gmp exact']:.2f}x",
            mm["gmp exact"] <= mmdg_step.EXACT_TARGET,
        )
    )
    targets.append(
        (
            f"MMDG: GMP features= <= {mmdg_step.FEATURES_TARGET}x the Sum step",
            f"{mm['gmp features=']:.2f}x",
            mm["gmp features="] <= mmdg_step.FEATURES_TARGET,
        )
    )

    print("\n== Targets (ratios measured in this run)")
    print("| target | measured | verdict |")
    print("|---|---|---|")
    for what, measured, ok in targets:
        print(f"| {what} | {measured} | {'met' if ok else 'missed'} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(
        json.dumps(
            {
                "steps": {str(k): v for k, v in results.items()},
                "memory_mib": peaks,
                "mmdg": {"sum ms": base, **mm},
                "targets": [{"target": w, "measured": m, "met": ok} for w, m, ok in targets],
            },
            indent=1,
        )
    )
    message = plot(results, args.out / "bench-steps.png", title)
    print(f"\n{message}")
    if args.copy_plot is not None and message.startswith("plot written"):
        args.copy_plot.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.out / "bench-steps.png", args.copy_plot)
        print(f"plot copied to {args.copy_plot}")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
