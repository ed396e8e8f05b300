"""Compare methods on an MMDG dataset: leave-one-domain-out × seeds × configs.

Writes ``results.csv`` (one row per run), ``results.md`` (the summary table),
``accuracy.png`` (held-out accuracy per method) and ``trajectories.png`` (per-modality
ratios and coefficients over training, as the GMP paper's Fig. 5) to ``--out``.

Run from the repository root::

    python -m mmdg.compare --data examples/mmdg/data/av-digits-dg \\
        --configs examples/mmdg/configs/*.yaml --seeds 3 --out runs/mmdg
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import multiprocessing
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import torch

from .features import DGSplits, leave_one_domain_out, load_dg_splits, read_meta
from .stats import paired_difference, paired_table
from .train import RunConfig, RunResult, load_config, train_run

__all__ = ["ABLATION", "ablation_table", "main", "run_comparison", "summarize"]

#: The GMP paper's Table 4 rows: config name → label, in the paper's order. ``joint`` and
#: ``gmp`` are the main configs; the others live in ``configs/ablation/``.
ABLATION = {
    "joint": "Base (joint training)",
    "gmp/igdm_only": "IGDM only",
    "gmp/cagp_only": "CAGP only",
    "gmp": "Full GMP (IGDM + CAGP)",
    "gmp/unified": "Unified modulation (k on both gradients)",
    "gmp/without_k": "IGDM without k",
    "gmp/without_p": "IGDM without p",
    "gmp/always_cls": "Always project the classification gradient",
    "gmp/always_dom": "Always project the domain gradient",
    "gmp/symmetric": "PCGrad (symmetric) instead of CAGP",
    "gmp/reverse": "Reverse CAGP (protect the stronger task)",
}


def unimodal_configs(base: RunConfig, modalities: Sequence[str]) -> list[RunConfig]:
    """One baseline per modality, trained alone: ``base``'s model and schedule, plain
    classification (no domain-adversarial branch), plain sums."""
    out = []
    for m in modalities:
        cfg = RunConfig(
            name=f"{m} only",
            method="sum",
            model=dict(base.model),
            loss={**base.loss, "domain": 0.0},
            train=dict(base.train),
            signals=base.signals,
            modalities=[m],
        )
        out.append(cfg)
    return out


@functools.lru_cache(maxsize=2)
def _splits(data: str, target: str, sources: tuple[str, ...]) -> DGSplits:
    """The splits of one held-out domain, loaded once per process."""
    return load_dg_splits(data, target=target, sources=list(sources))


def _init_worker(threads: int) -> None:
    """A worker process: ``threads`` intra-op threads, denormals flushed (as the CLI does)."""
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)


def _job(
    data: str, sources: tuple[str, ...], target: str, cfg: RunConfig, seed: int, device: str
) -> RunResult:
    return train_run(cfg, _splits(data, target, sources), seed=seed, device=device)


def run_comparison(
    data: str | Path,
    configs: Sequence[RunConfig],
    *,
    seeds: Sequence[int],
    targets: Sequence[str] | None = None,
    device: str = "cpu",
    progress: bool = True,
    workers: int = 1,
    threads: int = 1,
) -> list[RunResult]:
    """Train every config on every (target, seed); return all results.

    Args:
        data: The dataset folder.
        configs: The configs.
        seeds: The seeds.
        targets: Held-out domains (``None``: all).
        device: ``"cpu"`` or ``"cuda"``.
        progress: Show a progress bar.
        workers: Processes running the (config, target, seed) runs; 1 runs them here.
        threads: Intra-op threads of each worker process (``workers > 1`` only).

    Returns:
        One result per run, ordered by target, config, seed (whatever ``workers`` is).
    """
    meta = read_meta(data)
    pairs = [p for p in leave_one_domain_out(meta.domains) if targets is None or p[1] in targets]
    jobs = [
        (str(data), tuple(sources), target, cfg, seed, device)
        for sources, target in pairs
        for cfg in configs
        for seed in seeds
    ]
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is part of the examples extra
        tqdm = None
    bar = tqdm(total=len(jobs), disable=not progress, file=sys.stderr) if tqdm else None
    if workers <= 1:
        results = []
        for job in jobs:
            if bar is not None:
                bar.set_description(f"{job[3].name} → {job[2]} (seed {job[4]})")
            results.append(_job(*job))
            if bar is not None:
                bar.update()
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, context, _init_worker, (threads,)) as pool:
            futures: list[Future[RunResult]] = [pool.submit(_job, *job) for job in jobs]
            if bar is not None:
                for future in futures:
                    future.add_done_callback(lambda _: bar.update())
            results = [f.result() for f in futures]
    if bar is not None:
        bar.close()
    _splits.cache_clear()
    return results


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(results: Sequence[RunResult]) -> list[dict[str, object]]:
    """Per config: accuracies averaged over targets, then mean ± std over seeds."""
    by_config: dict[str, dict[int, list[RunResult]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        by_config[r.config][r.seed].append(r)
    rows = []
    for name, per_seed in by_config.items():
        keys = sorted({k for runs in per_seed.values() for r in runs for k in r.test})
        row: dict[str, object] = {"method": name, "seeds": len(per_seed)}
        for split in ("val", "test"):
            for key in keys:
                seed_means = [
                    statistics.fmean(getattr(r, split)[key] for r in runs)
                    for runs in per_seed.values()
                    if all(key in getattr(r, split) for r in runs)
                ]
                row[f"{split}/{key}"] = _mean_std(seed_means) if seed_means else None
        row["seconds"] = statistics.fmean(r.seconds for runs in per_seed.values() for r in runs)
        rows.append(row)
    return rows


def markdown_table(rows: Sequence[dict[str, object]], modalities: Sequence[str]) -> str:
    """The summary as a Markdown table."""
    cols = ["fused", *modalities]
    head = (
        "| method | "
        + " | ".join(f"held-out {c}" for c in cols)
        + " | "
        + " | ".join(f"source val {c}" for c in cols)
        + " | s/run |"
    )
    lines = [head, "|" + "---|" * (2 * len(cols) + 2)]
    for row in rows:
        cells = []
        for split in ("test", "val"):
            for c in cols:
                v = row.get(f"{split}/{c}")
                cells.append("–" if v is None else f"{v[0]:.3f} ± {v[1]:.3f}")
        lines.append(f"| {row['method']} | " + " | ".join(cells) + f" | {row['seconds']:.1f} |")
    return "\n".join(lines)


def robustness_table(results: Sequence[RunResult]) -> str:
    """Held-out fused accuracy with one modality missing or corrupted at test time, per
    config: mean over targets and seeds (clean accuracy first, for reference)."""
    keys = sorted({k for r in results for k in r.robust})
    if not keys:
        return ""
    lines = [
        "| method | clean | " + " | ".join(keys) + " |",
        "|---|---|" + "---|" * len(keys),
    ]
    for name in dict.fromkeys(r.config for r in results):
        runs = [r for r in results if r.config == name and r.robust]
        if not runs:
            continue
        cells = [statistics.fmean(r.test["fused"] for r in runs)]
        cells += [statistics.fmean(r.robust[k] for r in runs) for k in keys]
        lines.append(f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    return "\n".join(lines)


def ablation_table(results: Sequence[RunResult], reference: str = "gmp") -> str:
    """The GMP paper's Table 4 on these runs: each variant's held-out and source-validation
    fused accuracy (mean ± std over seeds of the mean over targets) and its paired
    difference with full GMP over (target × seed). Empty without any ablation variant."""
    names = [n for n in ABLATION if any(r.config == n for r in results)]
    if reference not in names or not any(n.startswith(f"{reference}/") for n in names):
        return ""
    rows = {str(row["method"]): row for row in summarize(results)}
    lines = [
        f"| variant | config | held-out fused | source val fused | variant − {reference} "
        "| 95 % interval | resolved |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names:
        test, val = rows[name]["test/fused"], rows[name]["val/fused"]
        cells = [f"{test[0]:.3f} ± {test[1]:.3f}", f"{val[0]:.3f} ± {val[1]:.3f}"]  # type: ignore[index]
        if name == reference:
            cells += ["–", "–", "–"]
        else:
            try:
                d = paired_difference(results, name, reference)
                cells += [
                    f"{d.mean:+.3f}",
                    f"[{d.low:+.3f}, {d.high:+.3f}]",
                    "yes" if d.resolved else "no",
                ]
            except ValueError:
                cells += ["–", "–", "–"]
        lines.append(f"| {ABLATION[name]} | `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(results: Sequence[RunResult], path: Path) -> None:
    """One row per run."""
    keys = sorted({k for r in results for k in r.test})
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["config", "target", "seed", "best_epoch", "seconds"]
            + [f"val_{k}" for k in keys]
            + [f"test_{k}" for k in keys]
        )
        for r in results:
            writer.writerow(
                [r.config, r.target, r.seed, r.best_epoch, f"{r.seconds:.2f}"]
                + [f"{r.val[k]:.4f}" if k in r.val else "" for k in keys]
                + [f"{r.test[k]:.4f}" if k in r.test else "" for k in keys]
            )


def save_results(results: Sequence[RunResult], path: Path) -> None:
    """All runs, trajectories included, as JSON (``--merge`` reads them back)."""
    path.write_text(json.dumps([dataclasses.asdict(r) for r in results]))


def load_results(paths: Sequence[str | Path]) -> list[RunResult]:
    """Runs saved by :func:`save_results`, from one or more files."""
    return [RunResult(**row) for p in paths for row in json.loads(Path(p).read_text())]


def plot_accuracy(rows: Sequence[dict[str, object]], path: Path, dataset: str = "") -> None:
    """Bar chart of held-out fused accuracy per method (mean ± std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [str(r["method"]) for r in rows]
    means = [r["test/fused"][0] for r in rows]  # type: ignore[index]
    stds = [r["test/fused"][1] for r in rows]  # type: ignore[index]
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 3.6))
    ax.bar(names, means, yerr=stds, capsize=4, color="#5b8def")
    for i, m in enumerate(means):
        ax.text(i, m + 0.01, f"{m:.3f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("held-out accuracy (fused)")
    prefix = f"{dataset}: " if dataset else ""
    ax.set_title(f"{prefix}leave-one-domain-out, mean over targets; error bars: std over seeds")
    ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_trajectories(
    results: Sequence[RunResult], path: Path, configs: Sequence[str], modalities: Sequence[str]
) -> None:
    """ρ, σ and the modulation coefficients per epoch (mean over targets and seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = ["rho", "sigma", "k", "p"]
    styles = ["-", "--", ":", "-."]
    colors = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4))
    for ax, key in zip(axes, panels):
        for c, name in enumerate(configs):
            runs = [r for r in results if r.config == name and r.trajectory]
            for s, m in enumerate(modalities):
                series = [[row.get(f"{key}/{m}") for row in r.trajectory] for r in runs]
                series = [x for x in series if all(v is not None for v in x)]
                if not series:
                    continue
                epochs = range(1, len(series[0]) + 1)
                mean = [statistics.fmean(col) for col in zip(*series)]
                ax.plot(
                    epochs,
                    mean,
                    styles[s % len(styles)],
                    color=colors(c % 10),
                    label=f"{name}: {m}",
                )
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        titles = {
            "rho": "semantic ratio ρ",
            "sigma": "domain ratio σ",
            "k": "coefficient k (cls)",
            "p": "coefficient p (dom)",
        }
        ax.set_title(titles[key])
        ax.set_xlabel("epoch")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fig5(names: Sequence[str]) -> list[str]:
    """The configs whose trajectories are drawn: joint training against GMP (the paper's
    Fig. 5) when both ran, else every config."""
    pair = [n for n in ("joint", "gmp") if n in names]
    return pair if len(pair) == 2 else list(names)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compare gradsurgery methods on MMDG data.")
    parser.add_argument("--data", required=True, help="feature-layout dataset folder")
    parser.add_argument("--configs", nargs="+", default=[], help="YAML/TOML config files")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds")
    parser.add_argument(
        "--first-seed", type=int, default=0, help="seeds FIRST .. FIRST+N-1 (to add seeds later)"
    )
    parser.add_argument("--targets", nargs="*", default=None, help="held-out domains (all)")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument("--batch-size", type=int, default=None, help="override train.batch_size")
    parser.add_argument("--lr", type=float, default=None, help="override train.lr")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--merge",
        nargs="+",
        default=None,
        help="summarise saved results.json files instead of training",
    )
    parser.add_argument("--out", default="runs/mmdg")
    parser.add_argument("--no-unimodal", action="store_true", help="skip unimodal baselines")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes over (config, target, seed)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per process (default: 1 with --workers > 1, else torch's own)",
    )
    args = parser.parse_args(argv)
    if not args.configs and not args.merge:
        parser.error("give --configs to train, or --merge to summarise saved results")
    if args.device == "cpu":
        torch.set_flush_denormal(True)  # tiny modulated gradients otherwise slow the CPU down
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    meta = read_meta(args.data)
    modalities = list(meta.modalities)
    if args.merge:
        results = load_results(args.merge)
        results.sort(key=lambda r: r.config.endswith(" only"))  # the baselines last, as trained
        names = list(dict.fromkeys(r.config for r in results))
        surgery = [n for n in names if not n.endswith(" only")]
        seeds = len({r.seed for r in results})
    else:
        configs = [
            load_config(p).with_overrides(
                epochs=args.epochs, batch_size=args.batch_size, lr=args.lr
            )
            for p in args.configs
        ]
        # Plain joint training first: the row every other method is read against.
        configs.sort(key=lambda c: c.method != "sum")
        if not args.no_unimodal:
            configs += unimodal_configs(configs[0], modalities)
        results = run_comparison(
            args.data,
            configs,
            seeds=range(args.first_seed, args.first_seed + args.seeds),
            targets=args.targets,
            device=args.device,
            progress=not args.quiet,
            workers=args.workers,
            threads=args.threads or 1,
        )
        surgery = [c.name for c in configs if not c.modalities]
        seeds = args.seeds
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = summarize(results)
    table = markdown_table(rows, modalities)
    targets = sorted({r.target for r in results})
    header = (
        f"{meta.name}: held-out domains {', '.join(targets)}; {seeds} seed(s); "
        "accuracy averaged over held-out domains, mean ± std over seeds; model selected on "
        "source validation.\n\n"
    )
    names = list(dict.fromkeys(r.config for r in results))
    pairs = len({(r.target, r.seed) for r in results})
    if "gmp" in names and pairs >= 2:
        methods = [n for n in names if n != "gmp" and not n.startswith("gmp/")]
        table += (
            "\n\nPaired differences of held-out fused accuracy over (target × seed); "
            "resolved = the 95 % t-interval excludes 0.\n\n"
            + paired_table(results, "gmp", others=methods)
        )
    ablation = ablation_table(results)
    if ablation:
        table += (
            "\n\nAblation (the GMP paper's Table 4): variant − full GMP, paired over "
            "(target × seed).\n\n" + ablation
        )
    robust = robustness_table(results)
    if robust:
        table += "\n\nRobustness: held-out fused accuracy, one modality missing or noisy.\n\n"
        table += robust
    (out / "results.md").write_text(header + table + "\n")
    write_csv(results, out / "results.csv")
    save_results(results, out / "results.json")
    if not args.no_plots:
        plot_accuracy(rows, out / "accuracy.png", meta.name)
        plot_trajectories(results, out / "trajectories.png", _fig5(surgery), modalities)
    print(header + table)
    print(
        f"\nwrote {out}/results.md, results.csv, results.json"
        + ("" if args.no_plots else ", accuracy.png, trajectories.png")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
