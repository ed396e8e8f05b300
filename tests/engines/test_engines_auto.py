"""The ``"auto"`` rule: which engine is chosen, and that building with it works."""

from __future__ import annotations

import pytest
import torch
from engine_models import assert_grads_close, make, mlp, step
from torch import nn

import gradsurgery as gs
from gradsurgery.core.blocks import make_blocks
from gradsurgery.engines.auto import GRAMIAN_MIN_NUMEL, AutoEngine, choose_engine
from gradsurgery.engines.table import TableEngine


def big() -> tuple[nn.Module, int]:
    trunk = mlp([64, 256, 256])
    return trunk, sum(p.numel() for p in trunk.parameters())


def test_the_rule() -> None:
    trunk, numel = big()
    blocks = make_blocks({"trunk": trunk})
    assert 4 * numel >= GRAMIAN_MIN_NUMEL
    assert choose_engine(blocks, 4, method=gs.PCGrad())[0] == "gramian"
    assert choose_engine(blocks, 4)[0] == "table"  # no method known
    assert choose_engine(blocks, 4, method=gs.build("dbmtl"))[0] == "table"  # reads rows
    assert choose_engine(blocks, 4, method=gs.PCGrad(), distributed=True)[0] == "table"
    assert choose_engine(blocks, 4, method=gs.PCGrad(), rows=True)[0] == "table"
    assert choose_engine(blocks, 1, method=gs.Sum())[0] == "table"
    assert choose_engine(blocks, 4, method=gs.PCGrad(), features=True)[0] == "representation"
    small = make_blocks({"trunk": mlp([4, 8, 8])})
    name, reason = choose_engine(small, 4, method=gs.PCGrad())
    assert name == "table" and "small table" in reason


def test_device_other_than_cpu_or_cuda_gets_the_table() -> None:
    trunk = mlp([64, 256, 256]).to("meta")
    name, reason = choose_engine(make_blocks({"trunk": trunk}), 4, method=gs.PCGrad())
    assert name == "table" and "meta" in reason


def test_auto_engine_builds_with_its_choice() -> None:
    torch.manual_seed(0)
    setup = make("mlp")
    setup.trunk = mlp([5, 256, 256, 256])
    setup.heads = nn.ModuleList(nn.Linear(256, 1) for _ in range(3))
    engine = AutoEngine(gs.PCGrad(seed=1))
    b, report = step(setup, gs.PCGrad(seed=1), engine)
    assert engine.last_choice is not None and engine.last_choice[0] == "gramian"
    assert report.engine == "gramian"
    a, _ = step(setup, gs.PCGrad(seed=1), TableEngine())
    assert_grads_close(a, b, 2e-5, 1e-6)
    _, report = step(
        setup, gs.PCGrad(seed=1), lambda h: AutoEngine(gs.PCGrad(), features={"trunk": h})
    )
    assert report.engine == "representation"
    _, report = step(setup, gs.build("dbmtl"), AutoEngine(gs.build("dbmtl")))
    assert report.engine == "table"
    _, report = step(setup, gs.PCGrad(), AutoEngine(gs.PCGrad(), rows=True))
    assert report.engine == "table"


@pytest.mark.parametrize("k", [2, 3])
def test_auto_engine_without_method_is_the_table(k: int) -> None:
    setup = make("mlp", k=k)
    _, report = step(setup, gs.Sum(), AutoEngine())
    assert report.engine == "table"
