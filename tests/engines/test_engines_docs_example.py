"""The engines usage example of ``docs/performance.md`` runs (with its names defined)."""

from __future__ import annotations

import torch
from torch import nn

import gradsurgery as gs
from gradsurgery.engines.gramian import GramianEngine
from gradsurgery.engines.representation import RepresentationEngine


def test_the_documented_example_runs() -> None:
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
    heads = {"a": nn.Linear(32, 1), "b": nn.Linear(32, 1)}
    criterion = nn.MSELoss()
    x = torch.randn(16, 8)
    y = {"a": torch.randn(16, 1), "b": torch.randn(16, 1)}

    h = trunk(x)
    losses = {name: criterion(head(h), y[name]) for name, head in heads.items()}
    gs.backward(losses, {"trunk": trunk}, gs.PCGrad(), engine=GramianEngine())

    h = trunk(x)
    losses = {name: criterion(head(h), y[name]) for name, head in heads.items()}
    gs.backward(losses, {"trunk": trunk}, gs.PCGrad(), engine=RepresentationEngine({"trunk": h}))
    assert all(p.grad is not None for p in trunk.parameters())
