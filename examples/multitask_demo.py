"""Train a small two-task model with every built-in method and print a comparison table.

Two regression tasks share a trunk; their targets pull the shared features in partly
opposite directions, so the per-task gradients on the trunk often conflict. Each method is
selected by name through ``gradsurgery.build`` and used in the same plain training loop.

Run: ``python examples/multitask_demo.py`` (a few seconds on a CPU).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import gradsurgery as gs


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs and two targets that share some structure and conflict on the rest."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=gen)
    shared = torch.sin(x[:, :3].sum(1))
    y1 = shared + 0.5 * x[:, 3] * x[:, 4]
    y2 = shared - 0.5 * x[:, 3] * x[:, 4] + 0.3 * x[:, 5]
    return x, y1, y2


class Model(nn.Module):
    """A shared trunk and one linear head per task."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 16), nn.Tanh())
        self.heads = nn.ModuleList([nn.Linear(16, 1), nn.Linear(16, 1)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.trunk(x)
        return [head(h).squeeze(-1) for head in self.heads]


def train(method_cfg: str | dict, *, steps: int, seed: int) -> dict[str, float]:
    """Train with one method; return test losses, conflict rate and time."""
    torch.manual_seed(seed)
    model = Model()
    method = gs.build(method_cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y1, y2 = make_data(512, seed)
    xt, t1, t2 = make_data(2048, seed + 1000)
    conflicts = 0
    start = time.perf_counter()
    for step in range(steps):
        idx = torch.arange(step * 64, (step + 1) * 64) % x.shape[0]
        p1, p2 = model(x[idx])
        losses = {
            "task1": nn.functional.mse_loss(p1, y1[idx]),
            "task2": nn.functional.mse_loss(p2, y2[idx]),
        }
        opt.zero_grad(set_to_none=True)
        report = gs.backward(losses, {"trunk": model.trunk}, method, diagnostics=True)
        conflict = report.blocks["trunk"].conflict
        conflicts += int(conflict is not None and bool(conflict.any()))
        opt.step()
    elapsed = time.perf_counter() - start
    with torch.no_grad():
        q1, q2 = model(xt)
        l1 = nn.functional.mse_loss(q1, t1).item()
        l2 = nn.functional.mse_loss(q2, t2).item()
    return {"task1": l1, "task2": l2, "conflict": conflicts / steps, "seconds": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description="Compare gradsurgery methods on two tasks.")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    print(f"two-task regression, shared trunk, {args.steps} Adam steps, {args.seeds} seeds")
    print("| method | task1 test MSE | task2 test MSE | mean | steps with conflict | s/run |")
    print("|---|---|---|---|---|---|")
    for name in gs.available(kind="multitask"):
        runs = [train(name, steps=args.steps, seed=s) for s in range(args.seeds)]
        avg = {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]}
        print(
            f"| {name} | {avg['task1']:.4f} | {avg['task2']:.4f} | "
            f"{(avg['task1'] + avg['task2']) / 2:.4f} | {avg['conflict']:.0%} | "
            f"{avg['seconds']:.2f} |"
        )


if __name__ == "__main__":
    main()
