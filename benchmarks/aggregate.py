"""Time every registered method's combine step, side by side with TorchJD's counterpart.

For k objectives and P parameters, each method runs on a fresh ``(k, P)`` gradient table
(its Gramian is not cached), so its time includes the Gramian, the method's ``k x k``
decision, the report and the final weighted pass. TorchJD 0.18's aggregator with the same
hyper-parameters runs on the same matrix in the same run, the two alternating, and the
ratio is the median of the per-pair ratios ours / TorchJD, so that a change in the machine's
load hits both alike. ``one pass`` is ``G.sum(0)``, one read of the matrix: the cheapest
possible aggregation, as a scale for the absolute times.

Two sizes by default: a realistic ``P`` (1M parameters, where the passes over the matrix
dominate) and a small one (10k, where the ``k x k`` decision dominates). Loss-based
methods get distinct positive loss values; the multimodal methods run on two modality
blocks with their signals, in a table of their own (TorchJD has no counterpart).

Usage:
    python benchmarks/aggregate.py [--p 1000000 10000] [--ks 2 4 8 16] [--repeat 5]
        [--device cpu] [--dtype float32] [--methods pcgrad upgrad ...]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import version

import torch

import gradsurgery as gs

try:  # optional: TorchJD side by side
    from torchjd import aggregation as jd

    HAVE_TORCHJD = True
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_TORCHJD = False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


#: Each timed sample runs the function often enough to last about this long (seconds), so
#: that at small ``P`` one preemption by another process does not decide a sample.
MIN_SAMPLE = 0.02


def _calls(fn: Callable[[], object], device: torch.device) -> int:
    """How many calls of ``fn`` (already warm) make one sample of about `MIN_SAMPLE`."""
    start = time.perf_counter()
    fn()
    _sync(device)
    once = time.perf_counter() - start
    return max(1, min(1000, int(MIN_SAMPLE / max(once, 1e-7))))


def _sample(fn: Callable[[], object], device: torch.device, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / calls


def timeit(fn: Callable[[], object], device: torch.device, repeat: int) -> float:
    """Median wall time of one call of ``fn`` over ``repeat`` samples, after a warm-up."""
    fn()
    _sync(device)
    calls = _calls(fn, device)
    return statistics.median(_sample(fn, device, calls) for _ in range(repeat))


def paired(
    ours: Callable[[], object], theirs: Callable[[], object], device: torch.device, repeat: int
) -> tuple[float, float, float]:
    """``(median ours s, median theirs s, median of the per-pair ratios ours / theirs)``.

    The two alternate, one warm-up each, so that a change of load hits both alike; each
    sample averages enough calls to last about `MIN_SAMPLE`.
    """
    for f in (ours, theirs):
        f()
        _sync(device)
    calls = [_calls(f, device) for f in (ours, theirs)]
    a, b, ratios = [], [], []
    for _ in range(repeat):
        x = _sample(ours, device, calls[0])
        y = _sample(theirs, device, calls[1])
        a.append(x)
        b.append(y)
        ratios.append(x / y)
    return statistics.median(a), statistics.median(b), statistics.median(ratios)


def _losses(k: int) -> list[float]:
    """Distinct positive losses, 0.5, 1.2, 1.9, ..."""
    return [0.5 + 0.7 * i for i in range(k)]


@dataclass
class Case:
    """How the benchmark drives one multi-task method at ``k`` objectives."""

    make: Callable[[int], gs.Method]
    #: TorchJD's counterpart with the same hyper-parameters (None: it has none).
    torchjd: Callable[[int], Callable[[torch.Tensor], torch.Tensor]] | None = None
    losses: bool = False
    note: str = field(default="")


def _build(name: str) -> Callable[[int], gs.Method]:
    return lambda k: gs.build(name)


def cases() -> dict[str, Case]:
    """Every registered method that takes ``k`` objectives on one block.

    The multimodal methods tied to modality blocks (GMP, OGM-GE, AGM, CGGM, PMR) are in
    `multimodal_cases`.
    """
    out: dict[str, Case] = {}
    counterpart: dict[str, Callable[[int], Callable[[torch.Tensor], torch.Tensor]]] = {}
    if HAVE_TORCHJD:
        counterpart = {
            "sum": lambda k: jd.Sum(),
            "mean": lambda k: jd.Mean(),
            "pcgrad": lambda k: jd.PCGrad(),
            "cagrad": lambda k: jd.CAGrad(c=0.5),
            "mgda": lambda k: jd.MGDA(),
            "upgrad": lambda k: jd.UPGrad(),
            "dualproj": lambda k: jd.DualProj(),
            "imtlg": lambda k: jd.IMTLG(),
            "alignedmtl": lambda k: jd.AlignedMTL(),
            "config": lambda k: jd.ConFIG(),
            "gradvac": lambda k: jd.GradVac(),
            "nashmtl": lambda k: jd.NashMTL(n_tasks=k),
            "fairgrad": lambda k: jd.FairGrad(alpha=1.0),
            "random": lambda k: jd.Random(),
            "constant": lambda k: jd.Constant(torch.ones(k)),
            "graddrop": lambda k: jd.GradDrop(),
            "sdmgrad": lambda k: jd.GramianWeightedAggregator(
                jd.SDMGradWeighting(lr=5.0, lambda_=0.3)
            ),
        }
    notes = {
        "mgda": "ours: exact min-norm solver; TorchJD: Frank-Wolfe (ε = 1e-3)",
        "sdmgrad": "ours: exact solver; TorchJD: its 20-iteration loop",
        "nashmtl": "TorchJD: cvxpy (ECOS)",
    }
    multimodal = {"gmp", "ogmge", "agm", "cggm", "pmr"}
    for name in gs.available():
        if name in multimodal:
            continue
        make = _build(name)
        if name == "constant":

            def make(k: int) -> gs.Method:
                return gs.build({"method": "constant", "weights": [1.0] * k})

        method = make(2)
        out[name] = Case(
            make=make,
            torchjd=counterpart.get(name),
            losses=bool(getattr(method, "needs_losses", False)),
            note=notes.get(name, ""),
        )
    return out


def multimodal_cases() -> dict[str, tuple[gs.Method, list[str], dict]]:
    """The multimodal methods on two modality blocks (video, audio), with their signals."""
    conf = {"video": 0.4, "audio": 0.8}
    dom = {"video": 0.3, "audio": 0.7}
    return {
        "gmp": (gs.GMP(), ["cls", "dom"], {m: {"cls": conf[m], "dom": dom[m]} for m in conf}),
        "ogmge(ge=False)": (gs.OGMGE(ge=False), ["loss"], {m: {"loss": conf[m]} for m in conf}),
        "ogmge": (gs.OGMGE(), ["loss"], {m: {"loss": conf[m]} for m in conf}),
        "agm": (gs.build("agm"), ["cls"], {m: {"cls": conf[m]} for m in conf}),
        "cggm": (gs.build("cggm"), ["cls"], {m: {"cls": conf[m]} for m in conf}),
        "pmr": (
            gs.build("pmr"),
            ["cls", "proto_video", "proto_audio"],
            {m: {f"proto_{m}": conf[m]} for m in conf},
        ),
    }


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence third-party solver warnings (cvxpy's, for TorchJD's Nash-MTL)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _counterpart(name: str, case: Case, k: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """TorchJD's aggregator for ``case``, or None (with a line saying why) when it cannot be
    built: some need solvers TorchJD keeps optional (``pip install "torchjd[full]"``)."""
    if case.torchjd is None:
        return None
    try:
        return case.torchjd(k)
    except ImportError as error:
        print(f"  {name}: TorchJD's counterpart left out: {error}", flush=True)
        return None


def multitask_table(
    p: int,
    ks: list[int],
    repeat: int,
    device: torch.device,
    dtype: torch.dtype,
    only: list[str] | None,
) -> list[tuple[str, int, float, float | None, float | None, bool]]:
    """Rows ``(method, k, ours ms, TorchJD ms, ratio, uses Gramian)``; prints as it goes."""
    gen = torch.Generator(device=device).manual_seed(0)
    all_cases = cases()
    names = [n for n in all_cases if only is None or n in only]
    rows = []
    header = (
        f"| {'method':<11} | {'k':>2} | {'one pass ms':>11} | {'ours ms':>9} | "
        f"{'TorchJD ms':>10} | {'ratio':>6} | not slower than TorchJD |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for k in ks:
        G = torch.randn(k, p, generator=gen, device=device, dtype=dtype)
        objectives = [f"task{i}" for i in range(k)]
        base = timeit(lambda G=G: G.sum(0), device, repeat)
        for name in names:
            case = all_cases[name]
            method = case.make(k)
            losses = torch.tensor(_losses(k)) if case.losses else None

            def ours(
                method: gs.Method = method,
                G: torch.Tensor = G,
                losses: torch.Tensor | None = losses,
                objectives: list[str] = objectives,
            ) -> object:
                table = gs.GradientTable.from_matrices({"block": G}, objectives, losses=losses)
                return method.apply(table)

            aggregator = _counterpart(name, case, k)
            with _quiet():
                if aggregator is not None:
                    a, b, r = paired(ours, lambda G=G, f=aggregator: f(G), device, repeat)
                    theirs: float | None = b * 1e3
                    ratio: float | None = r
                else:
                    a, theirs, ratio = timeit(ours, device, repeat), None, None
            gram = bool(getattr(method, "uses_gramian", False))
            rows.append((name, k, a * 1e3, theirs, ratio, gram))
            verdict = "—" if ratio is None else ("yes" if ratio <= 1.0 else "NO")
            print(
                f"| {name + ('' if gram else '°'):<11} | {k:>2} | {base * 1e3:>11.2f} | "
                f"{a * 1e3:>9.2f} | "
                + (f"{'—':>10} | {'—':>6} |" if theirs is None else f"{theirs:>10.2f} | ")
                + ("" if ratio is None else f"{ratio:>5.2f}x |")
                + f" {verdict:<23} |",
                flush=True,
            )
        del G
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--p", type=int, nargs="+", default=[1_000_000, 10_000])
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--methods", nargs="+", help="only these methods (default: all)")
    parser.add_argument("--no-torchjd", action="store_true", help="leave TorchJD out")
    parser.add_argument("--no-multimodal", action="store_true", help="skip the multimodal table")
    args = parser.parse_args()
    global HAVE_TORCHJD
    if args.no_torchjd:
        HAVE_TORCHJD = False
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    jd_version = version("torchjd") if HAVE_TORCHJD else "not installed"
    slower: list[str] = []
    for p in args.p:
        print(
            f"\nP = {p:,}, dtype {args.dtype}, device {device}, {torch.get_num_threads()} "
            f"thread(s), median of {args.repeat}; TorchJD {jd_version}"
        )
        print(
            "ours / TorchJD: median of alternating pairs on the same matrix; "
            "° = the method does not read the Gramian\n"
        )
        rows = multitask_table(p, args.ks, args.repeat, device, dtype, args.methods)
        slower += [
            f"{name} at k={k}, P={p:,} ({ratio:.2f}x)"
            for name, k, _, _, ratio, gram in rows
            if gram and ratio is not None and ratio > 1.0 and k <= 16
        ]
        notes = {n: c.note for n, c in cases().items() if c.note and any(r[0] == n for r in rows)}
        for name, note in notes.items():
            print(f"  {name}: {note}")
        if args.no_multimodal:
            continue
        print(
            "\nMultimodal (no TorchJD counterpart): two modality blocks of P/2 parameters; "
            "one pass = each block's G.sum(0)"
        )
        gen = torch.Generator(device=device).manual_seed(1)
        for name, (method, names, signals) in multimodal_cases().items():
            if args.methods is not None and name.split("(")[0] not in args.methods:
                continue
            blocks = {
                m: torch.randn(len(names), p // 2, generator=gen, device=device, dtype=dtype)
                for m in ("video", "audio")
            }
            base = timeit(lambda b=blocks: [g.sum(0) for g in b.values()], device, args.repeat)

            def step(method=method, names=names, signals=signals, b=blocks) -> object:
                return method.apply(gs.GradientTable.from_matrices(b, names), signals)

            t = timeit(step, device, args.repeat)
            print(
                f"  {name:<16} rows/block {len(names)}  one pass {base * 1e3:8.2f} ms  "
                f"ours {t * 1e3:8.2f} ms  ({t / base:.2f}x one pass)"
            )
            del blocks
    if HAVE_TORCHJD:
        print(
            "\nTarget: no Gramian method slower than TorchJD's counterpart at k <= 16: "
            + ("met" if not slower else "missed: " + "; ".join(slower))
        )


if __name__ == "__main__":
    main()
