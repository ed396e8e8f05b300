"""Train a small multi-task model with every multi-task method and compare per-task losses.

Two (or three) regression tasks share a trunk whose output is a 2-wide bottleneck, with one
linear head per task. Each task's target is a shared part, ``sin(x_0 + x_1 + x_2)``, plus
``1.5 · relu(x · u_i)`` along the task's own **target direction** ``u_i`` in input space. The
``--conflict`` knob in [0, 1] sets the angle between those directions:

* ``--conflict 0``: every task has the same direction (the tasks agree);
* ``--conflict 0.5``: neighbouring directions are orthogonal (two tasks: 90 degrees);
* ``--conflict 1``: they are as far apart as they can be (two tasks: opposite, ``u`` and
  ``−u``; three tasks: 120 degrees apart in a plane).

In between, the angle between neighbouring tasks grows linearly, ``θ = conflict · θ_max``
(``θ_max`` = 180 degrees for two tasks, 120 for three). ``relu`` is not odd, so the tasks
need different features of the narrow trunk as the angle grows: their gradients on the trunk
conflict more often ("steps with conflict" in the table) and the plain sum's losses rise.

Each method is selected by name through ``gradsurgery.build`` and used in the same plain
training loop; the table prints each task's test loss per method. A plot of the final
per-task losses per method (and, with ``--sweep``, of the mean loss vs the conflict) is
written to ``runs/multitask_demo.png`` when matplotlib is installed (``--no-plot`` skips it).

Run: ``python examples/multitask_demo.py`` (under a minute on one CPU thread), or
``python examples/multitask_demo.py --sweep 0 0.5 1 --methods sum pcgrad mgda upgrad``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from torch import nn

import gradsurgery as gs

DIM = 10
#: The trunk's output width: a bottleneck the tasks compete for.
WIDTH = 2


def angle(tasks: int, conflict: float) -> float:
    """The angle between neighbouring tasks' target directions, in degrees."""
    if not 0.0 <= conflict <= 1.0:
        raise ValueError(f"conflict must be in [0, 1], got {conflict}")
    return conflict * (180.0 if tasks == 2 else 360.0 / tasks)


def directions(tasks: int, conflict: float) -> torch.Tensor:
    """``(tasks, DIM)`` unit target directions, `angle` apart (see the module docstring)."""
    step = math.radians(angle(tasks, conflict))
    out = torch.zeros(tasks, DIM)
    for i in range(tasks):
        a = step * (i - (tasks - 1) / 2)
        # In the plane of inputs 3 and 4; the shared part reads inputs 0-2.
        out[i, 3], out[i, 4] = math.cos(a), math.sin(a)
    return out


def make_data(n: int, seed: int, dirs: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Inputs and one target per task: a shared part plus the task's own direction."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, DIM, generator=gen)
    shared = torch.sin(x[:, :3].sum(1))
    return x, [shared + 1.5 * torch.relu(x @ d) for d in dirs]


class Model(nn.Module):
    """A shared trunk and one linear head per task."""

    def __init__(self, tasks: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(DIM, 32), nn.Tanh(), nn.Linear(32, WIDTH), nn.Tanh())
        self.heads = nn.ModuleList([nn.Linear(WIDTH, 1) for _ in range(tasks)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.trunk(x)
        return [head(h).squeeze(-1) for head in self.heads]


def train(
    method_cfg: str | dict, *, steps: int, seed: int, tasks: int, conflict: float
) -> dict[str, float]:
    """Train with one method; return per-task test losses, conflict rate and time."""
    torch.manual_seed(seed)
    model = Model(tasks)
    method = gs.build(method_cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    dirs = directions(tasks, conflict)
    x, ys = make_data(512, seed, dirs)
    xt, yts = make_data(2048, seed + 1000, dirs)
    names = [f"task{i + 1}" for i in range(tasks)]
    conflicts = 0
    start = time.perf_counter()
    for step in range(steps):
        idx = torch.arange(step * 64, (step + 1) * 64) % x.shape[0]
        preds = model(x[idx])
        losses = {name: nn.functional.mse_loss(p, y[idx]) for name, p, y in zip(names, preds, ys)}
        opt.zero_grad(set_to_none=True)
        report = gs.backward(losses, {"trunk": model.trunk}, method, diagnostics=True)
        conflict_mask = report.blocks["trunk"].conflict
        conflicts += int(conflict_mask is not None and bool(conflict_mask.any()))
        opt.step()
    elapsed = time.perf_counter() - start
    with torch.no_grad():
        out = {
            name: nn.functional.mse_loss(p, y).item() for name, p, y in zip(names, model(xt), yts)
        }
    return {**out, "conflict": conflicts / max(steps, 1), "seconds": elapsed}


def compare(
    methods: list[str], *, steps: int, seeds: int, tasks: int, conflict: float
) -> dict[str, dict[str, float]]:
    """Mean over seeds of `train`'s results, per method; prints the table as it goes."""
    names = [f"task{i + 1}" for i in range(tasks)]
    print(
        f"\n{tasks}-task regression, shared trunk, conflict {conflict:g} (neighbouring target "
        f"directions {angle(tasks, conflict):.0f} degrees apart), {steps} Adam steps, "
        f"{seeds} seed(s)"
    )
    header = " | ".join(f"{n} test MSE" for n in names)
    print(f"| method | {header} | mean | steps with conflict | s/run |")
    print("|---" * (tasks + 4) + "|")
    table: dict[str, dict[str, float]] = {}
    for name in methods:
        runs = [
            train(name, steps=steps, seed=s, tasks=tasks, conflict=conflict) for s in range(seeds)
        ]
        avg = {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]}
        avg["mean"] = sum(avg[n] for n in names) / tasks
        table[name] = avg
        cells = " | ".join(f"{avg[n]:.4f}" for n in names)
        print(
            f"| {name} | {cells} | {avg['mean']:.4f} | {avg['conflict']:.0%} | "
            f"{avg['seconds']:.2f} |",
            flush=True,
        )
    return table


def plot(results: dict[float, dict[str, dict[str, float]]], tasks: int, path: Path) -> None:
    """Per-task final test loss per method (one panel per conflict level), and the mean
    loss vs the conflict when several levels were run."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("\nmatplotlib is not installed: no plot (pip install matplotlib)")
        return
    levels = sorted(results)
    methods = list(results[levels[0]])
    names = [f"task{i + 1}" for i in range(tasks)]
    panels = len(levels) + (1 if len(levels) > 1 else 0)
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.5), squeeze=False)
    width = 0.8 / tasks
    for ax, level in zip(axes[0], levels):
        for j, task in enumerate(names):
            ax.bar(
                [i + (j - (tasks - 1) / 2) * width for i in range(len(methods))],
                [results[level][m][task] for m in methods],
                width,
                label=task,
            )
        ax.set_xticks(range(len(methods)), methods, rotation=70, fontsize=7)
        ax.set_ylabel("final test MSE")
        ax.set_title(f"conflict {level:g}")
        ax.legend(fontsize=7)
    if len(levels) > 1:
        ax = axes[0][-1]
        for m in methods:
            ax.plot(levels, [results[c][m]["mean"] for c in levels], ".-", label=m)
        ax.set_xlabel("conflict")
        ax.set_ylabel("mean test MSE over tasks")
        ax.set_title("mean loss vs conflict")
        ax.legend(fontsize=5, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"\nplot written to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Compare gradsurgery methods on 2-3 tasks.")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--tasks", type=int, default=2, choices=[2, 3])
    parser.add_argument(
        "--conflict",
        type=float,
        default=0.75,
        help="angle between the tasks' target directions, as a fraction of the largest "
        "(0: same direction, 0.5: orthogonal, 1: opposite for two tasks)",
    )
    parser.add_argument(
        "--sweep",
        type=float,
        nargs="+",
        help="conflict levels to run instead of --conflict (e.g. --sweep 0 0.5 1)",
    )
    parser.add_argument("--methods", nargs="+", help="only these methods (default: all)")
    parser.add_argument("--plot", type=Path, default=Path("runs/multitask_demo.png"))
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    methods = args.methods or gs.available(kind="multitask")
    levels = args.sweep or [args.conflict]
    if any(not 0.0 <= c <= 1.0 for c in levels):
        parser.error(f"conflict levels must be in [0, 1], got {levels}")
    results = {
        c: compare(methods, steps=args.steps, seeds=args.seeds, tasks=args.tasks, conflict=c)
        for c in levels
    }
    if not args.no_plot:
        plot(results, args.tasks, args.plot)


if __name__ == "__main__":
    main()
