"""Shared checks of the loss methods' tests: whole trajectories with varying losses.

The property suite (tests/test_properties.py) feeds the same losses at every call; these
helpers run the state through steps whose losses change, in both row orders and across a
save/load.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import torch

import gradsurgery as gs


def trajectory(k: int, n: int, seed: int = 0, p: int = 5) -> list[tuple[torch.Tensor, list[float]]]:
    """``n`` steps of random ``(k, p)`` rows with varying positive losses."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        G = torch.randn(k, p, generator=gen, dtype=torch.float64)
        values = (0.2 + 3 * torch.rand(k, generator=gen, dtype=torch.float64)).tolist()
        out.append((G, values))
    return out


def names(k: int) -> list[str]:
    return [f"task{i}" for i in range(k)]


def check_permutation_over_trajectory(
    make: Callable[[], gs.Method], k: int = 3, n: int = 8, seed: int = 0
) -> list[torch.Tensor]:
    """Two instances, one fed every step with its objectives in reversed order, give the
    same updates at every step (the state follows the objectives' names). Returns the
    updates, so callers can check that the weights really moved."""
    a, b = make(), make()
    perm = list(reversed(range(k)))
    objectives = names(k)
    outs = []
    for G, values in trajectory(k, n, seed):
        out_a = a(G, objectives=objectives, losses=values)
        out_b = b(
            G[perm], objectives=[objectives[i] for i in perm], losses=[values[i] for i in perm]
        )
        torch.testing.assert_close(out_a, out_b, rtol=1e-12, atol=1e-12)
        outs.append(out_a)
    return outs


def check_resume_over_trajectory(
    make: Callable[[], gs.Method], k: int = 3, n: int = 8, seed: int = 0
) -> None:
    """Saving mid-trajectory (through ``torch.save``) and loading into a fresh instance
    continues bit-identically; ``reset`` returns to the fresh trajectory."""
    steps = trajectory(k, n, seed)
    objectives = names(k)
    first = make()
    for G, values in steps[: n // 2]:
        first(G, objectives=objectives, losses=values)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    second = make()
    second.load_state_dict(torch.load(buffer))
    for G, values in steps[n // 2 :]:
        out_first = first(G, objectives=objectives, losses=values)
        out_second = second(G, objectives=objectives, losses=values)
        torch.testing.assert_close(out_first, out_second, rtol=0, atol=0)
    first.reset()
    fresh = make()
    for G, values in steps:
        out_first = first(G, objectives=objectives, losses=values)
        torch.testing.assert_close(
            out_first, fresh(G, objectives=objectives, losses=values), rtol=0, atol=0
        )


def report_weights(method: gs.Method, block: str = "block") -> torch.Tensor:
    """The weights of the method's last report."""
    assert method.last_report is not None
    return method.last_report.blocks[block].weights
