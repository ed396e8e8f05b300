"""Time and peak memory of the engines against a plain ``sum(losses).backward()`` step.

Step time: a multi-task MLP (shared trunk 256→1024→1024→1024 with ReLUs, batch 256, ``k``
linear heads with a squared-error loss each); each step is forward + backward, and the
ratio is its median time over the plain step's, both measured in the same run. Rows: the
table, gramian and representation engines with PCGrad (and MGDA when registered), and
TorchJD 0.18 side by side when it is installed (``mtl_backward`` + ``jac_to_grad`` with its
PCGrad aggregator; its autogram ``Engine`` with ``PCGradWeighting``).

Peak memory: a 20M-parameter trunk (256→2560→2560→2560→2560, batch 256, ``k`` = 8), one
fresh subprocess per configuration, which runs three steps and reports its peak resident
set size (``VmHWM`` of ``/proc/self/status``; ``ru_maxrss`` where there is no ``/proc``); the
ratio is over the plain step's peak.

Usage:
    python benchmarks/engines.py [--ks 2 4 8] [--repeat 7] [--threads 1] [--quick]
        [--no-memory] [--no-torchjd]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version

import torch
from torch import nn

import gradsurgery as gs
from gradsurgery.engines.gramian import GramianEngine
from gradsurgery.engines.representation import RepresentationEngine
from gradsurgery.engines.table import TableEngine

try:  # optional: TorchJD side by side
    from torchjd.aggregation import PCGrad as JDPCGrad
    from torchjd.aggregation import PCGradWeighting as JDPCGradWeighting
    from torchjd.autogram import Engine as JDEngine
    from torchjd.autojac import jac_to_grad, mtl_backward

    HAVE_TORCHJD = True
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_TORCHJD = False

#: Targets printed with the measured ratios: (description, configuration, bound).
MEMORY_TARGET = 1.3
REPRESENTATION_TARGET = 1.3


@dataclass
class Model:
    """A shared trunk, ``k`` heads and one batch."""

    trunk: nn.Sequential
    heads: nn.ModuleList
    x: torch.Tensor
    y: torch.Tensor

    def parameters(self) -> list[torch.Tensor]:
        return [*self.trunk.parameters(), *self.heads.parameters()]

    def forward(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        h = self.trunk(self.x)
        losses = {
            f"task{i}": ((head(h).squeeze(1) - self.y[:, i]) ** 2).mean()
            for i, head in enumerate(self.heads)
        }
        return h, losses

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None


def make_model(widths: list[int], batch: int, k: int, seed: int = 0) -> Model:
    """An MLP trunk over ``widths`` (ReLU between layers) with ``k`` linear heads."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.ReLU()]
    trunk = nn.Sequential(*layers)
    heads = nn.ModuleList(nn.Linear(widths[-1], 1) for _ in range(k))
    return Model(trunk, heads, torch.randn(batch, widths[0]), torch.randn(batch, k))


def steps(model: Model, only: str | None = None) -> dict[str, Callable[[], None]]:
    """Every configuration (or only the one named) as a zero-argument step."""

    def plain() -> None:
        _, losses = model.forward()
        torch.autograd.backward(torch.stack(list(losses.values())).sum())

    def ours(engine: str, method: gs.Method) -> Callable[[], None]:
        def step() -> None:
            h, losses = model.forward()
            chosen: object = engine
            if engine == "representation":
                chosen = RepresentationEngine({"trunk": h})
            elif engine == "gramian":
                chosen = GramianEngine()
            elif engine == "table":
                chosen = TableEngine()
            gs.backward(losses, {"trunk": model.trunk}, method, engine=chosen)  # type: ignore[arg-type]

        return step

    out: dict[str, Callable[[], None]] = {"plain": plain}
    methods: dict[str, gs.Method] = {"pcgrad": gs.PCGrad()}
    if "mgda" in gs.available():
        methods["mgda"] = gs.build("mgda")
    for label, method in methods.items():
        for engine in ("table", "gramian", "representation"):
            out[f"{engine}/{label}"] = ours(engine, method)
    if HAVE_TORCHJD and only in (None, "torchjd autojac/pcgrad"):
        shared = list(model.trunk.parameters())
        aggregator = JDPCGrad()

        def autojac() -> None:
            h, losses = model.forward()
            mtl_backward(list(losses.values()), features=h)
            jac_to_grad(shared, aggregator)

        out["torchjd autojac/pcgrad"] = autojac
    if HAVE_TORCHJD and only in (None, "torchjd autogram/pcgrad"):
        weighting = JDPCGradWeighting()
        # The autogram engine hooks its modules' forward: when the other configurations
        # run in the same process, it gets its own copy of the model, which their forward
        # passes do not reach.
        twin = model if only is not None else copy.deepcopy(model)
        jd_engine = JDEngine(twin.trunk, batch_dim=None)

        def autogram() -> None:
            twin.zero_grad()
            _, losses = twin.forward()
            stacked = torch.stack(list(losses.values()))
            gramian = jd_engine.compute_gramian(stacked)
            torch.autograd.backward(stacked, grad_tensors=weighting(gramian))

        out["torchjd autogram/pcgrad"] = autogram
    return out if only is None else {only: out[only]}


def timeit(
    base: Callable[[], None],
    fn: Callable[[], None],
    zero: Callable[[], None],
    repeat: int,
    device: torch.device | None = None,
) -> tuple[float, float]:
    """``(median time of base, median of the per-pair ratios fn / base)``.

    The two alternate (one warm-up each, gradients cleared before every run), so that a
    change in the machine's load during the measurement hits both alike. On a CUDA
    ``device`` every run is timed between two synchronisations.
    """

    def sync() -> None:
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)

    for f in (base, fn):
        zero()
        f()
    times, ratios = [], []
    for _ in range(repeat):
        pair = []
        for f in (base, fn):
            zero()
            sync()
            start = time.perf_counter()
            f()
            sync()
            pair.append(time.perf_counter() - start)
        times.append(pair[0])
        ratios.append(pair[1] / pair[0])
    return statistics.median(times), statistics.median(ratios)


def time_table(
    widths: list[int], batch: int, ks: list[int], repeat: int
) -> dict[int, dict[str, float]]:
    """``{k: {configuration: ratio}}`` plus the plain step's milliseconds under ``"plain ms"``."""
    results: dict[int, dict[str, float]] = {}
    for k in ks:
        model = make_model(widths, batch, k)
        configs = steps(model)
        row: dict[str, float] = {}
        bases = []
        for name, fn in configs.items():
            if name == "plain":
                continue
            base, row[name] = timeit(configs["plain"], fn, model.zero_grad, repeat)
            bases.append(base)
        results[k] = {"plain ms": statistics.median(bases) * 1e3, **row}
    return results


def agreement(
    widths: list[int], batch: int, ks: list[int], seeds: int
) -> dict[tuple[int, str], tuple[float, float, float]]:
    """How close the representation engine's step is to the exact (table) step.

    For each ``k`` and method: the cosine between the two trunk updates, the ratio of their
    norms, and the largest difference of the row weights, each the mean over ``seeds``
    models and batches.
    """
    methods = [m for m in ("pcgrad", "mgda", "cagrad", "upgrad") if m in gs.available()]
    out: dict[tuple[int, str], tuple[float, float, float]] = {}
    for k in ks:
        for name in methods:
            cos, norm, dw = [], [], []
            for seed in range(seeds):
                model = make_model(widths, batch, k, seed=seed)
                updates, weights = [], []
                for engine in ("table", "representation"):
                    model.zero_grad()
                    h, losses = model.forward()
                    chosen: object = TableEngine()
                    if engine == "representation":
                        chosen = RepresentationEngine({"trunk": h})
                    report = gs.backward(
                        losses,
                        {"trunk": model.trunk},
                        gs.build(name),
                        engine=chosen,  # type: ignore[arg-type]
                    )
                    grads = [p.grad for p in model.trunk.parameters() if p.grad is not None]
                    updates.append(torch.cat([g.reshape(-1) for g in grads]).double())
                    weights.append(report.blocks["trunk"].weights)
                a, b = updates
                cos.append(float(torch.nn.functional.cosine_similarity(a, b, dim=0)))
                norm.append(float(b.norm() / a.norm()))
                dw.append(float((weights[0] - weights[1]).abs().max()))
            out[(k, name)] = (
                statistics.mean(cos),
                statistics.mean(norm),
                statistics.mean(dw),
            )
    return out


def peak_rss_kib() -> int:
    """This process's peak resident set size, in KiB.

    ``VmHWM`` (the high-water mark of this process image) where Linux has it:
    ``ru_maxrss`` survives ``execve``, so a child started from a large parent would report
    at least the parent's resident size at the fork.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def memory_child(config: str, widths: list[int], batch: int, k: int) -> None:
    """Run three steps of one configuration and print the peak RSS (KiB) as JSON."""
    model = make_model(widths, batch, k)
    fn = steps(model, only=config)[config]
    for _ in range(3):
        model.zero_grad()
        fn()
    print(json.dumps({"config": config, "maxrss_kib": peak_rss_kib()}))


def memory_table(
    widths: list[int], batch: int, k: int, configs: list[str], threads: int, default_malloc: bool
) -> dict[str, float]:
    """Peak RSS (MiB) of each configuration, each in a fresh subprocess.

    Unless ``default_malloc``, the children run with ``MALLOC_MMAP_THRESHOLD_`` at 1 MiB:
    glibc then maps every tensor above 1 MiB on its own and returns it when freed, so the
    peak measures the tensors alive at once rather than how the heap fragmented (with
    the default, the threshold grows to 32 MiB after the first large free and tensors of
    a few MiB to 32 MiB stay in the heap).
    """
    env = dict(os.environ)
    if not default_malloc:
        env["MALLOC_MMAP_THRESHOLD_"] = str(1 << 20)
    out = {}
    for config in configs:
        cmd = [
            sys.executable,
            __file__,
            "--memory-child",
            config,
            "--widths",
            *map(str, widths),
            "--batch",
            str(batch),
            "--ks",
            str(k),
            "--threads",
            str(threads),
        ]
        if not HAVE_TORCHJD:
            cmd.append("--no-torchjd")
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        line = [s for s in done.stdout.splitlines() if s.startswith("{")][-1]
        out[config] = json.loads(line)["maxrss_kib"] / 1024
    return out


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 1024, 1024, 1024])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument(
        "--memory-widths", type=int, nargs="+", default=[256, 2560, 2560, 2560, 2560]
    )
    parser.add_argument("--memory-k", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory table")
    parser.add_argument("--no-time", action="store_true", help="skip the step-time table")
    parser.add_argument("--no-torchjd", action="store_true", help="leave TorchJD out")
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="measure memory with glibc's default mmap threshold (see memory_table)",
    )
    parser.add_argument("--no-agreement", action="store_true", help="skip the agreement table")
    parser.add_argument("--seeds", type=int, default=3, help="models per agreement entry")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    global HAVE_TORCHJD
    if args.no_torchjd:
        HAVE_TORCHJD = False
    if args.memory_child:
        memory_child(args.memory_child, args.widths, args.batch, args.ks[0])
        return
    if args.quick:
        args.widths, args.batch, args.ks, args.repeat = [16, 32, 32], 8, [2], 2
        args.memory_widths, args.memory_k, args.seeds = [16, 64, 64], 2, 1
    width = 24
    if not args.no_time:
        trunk_params = sum(a * b + b for a, b in zip(args.widths[:-1], args.widths[1:]))
        print(
            f"Step time: trunk {'→'.join(map(str, args.widths))} ({trunk_params / 1e6:.2f}M), "
            f"batch {args.batch}, {args.threads} thread(s), median of {args.repeat}; "
            "ratio = step time / plain sum(losses).backward() step"
        )
        if HAVE_TORCHJD:
            print(f"TorchJD {version('torchjd')} side by side")
        results = time_table(args.widths, args.batch, args.ks, args.repeat)
        names = [n for n in results[args.ks[0]] if n != "plain ms"]
        width = max(len(n) for n in names)
        header = f"{'configuration':<{width}} " + " ".join(f"{'k=' + str(k):>8}" for k in args.ks)
        print(header)
        print("-" * len(header))
        print(
            f"{'plain (ms)':<{width}} "
            + " ".join(f"{results[k]['plain ms']:>8.1f}" for k in args.ks)
        )
        for name in names:
            print(f"{name:<{width}} " + " ".join(f"{results[k][name]:>7.2f}x" for k in args.ks))
        print("\nTargets")
        k_max = max(args.ks)
        rep = results[k_max]["representation/pcgrad"]
        print(
            f"  representation/pcgrad step <= {REPRESENTATION_TARGET}x plain at k={k_max}: "
            f"{rep:.2f}x -> {verdict(rep <= REPRESENTATION_TARGET)}"
        )
        for k in args.ks:
            g, t = results[k]["gramian/pcgrad"], results[k]["table/pcgrad"]
            print(f"  gramian faster than table at k={k}: {g:.2f}x vs {t:.2f}x -> {verdict(g < t)}")
    if not args.no_agreement:
        print(
            f"\nRepresentation vs exact (table) step, same trunk and batch, mean of "
            f"{args.seeds} seeds: cosine of the trunk updates / norm ratio / max |Δ weight|"
        )
        close = agreement(args.widths, args.batch, args.ks, args.seeds)
        for (k, name), (c, r, d) in close.items():
            print(f"  k={k} {name:<8} cosine {c:.4f}  norm ratio {r:.3f}  max |Δw| {d:.3f}")
    if args.no_memory:
        return
    mem_params = sum(a * b + b for a, b in zip(args.memory_widths[:-1], args.memory_widths[1:]))
    configs = ["plain", "table/pcgrad", "gramian/pcgrad", "representation/pcgrad"]
    if HAVE_TORCHJD:
        configs += ["torchjd autojac/pcgrad", "torchjd autogram/pcgrad"]
    if args.quick:
        configs = ["plain", "gramian/pcgrad"]
    print(
        f"\nPeak memory: trunk {'→'.join(map(str, args.memory_widths))} "
        f"({mem_params / 1e6:.1f}M parameters), batch {args.batch}, k={args.memory_k}, "
        "peak RSS of a fresh process per configuration"
        + (" (default malloc)" if args.default_malloc else " (MALLOC_MMAP_THRESHOLD_=1 MiB)")
    )
    peaks = memory_table(
        args.memory_widths, args.batch, args.memory_k, configs, args.threads, args.default_malloc
    )
    for config in configs:
        print(
            f"  {config:<{width}} {peaks[config]:>8.0f} MiB  {peaks[config] / peaks['plain']:.2f}x"
        )
    ratio = peaks["gramian/pcgrad"] / peaks["plain"]
    print(
        f"  target: gramian peak <= {MEMORY_TARGET}x plain at k={args.memory_k}: {ratio:.2f}x "
        f"-> {verdict(ratio <= MEMORY_TARGET)}"
    )


if __name__ == "__main__":
    main()
