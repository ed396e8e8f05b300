"""Accumulation in one process: the method decides once, on the sum of the micro-batches'
rows, and its state advances once per step (no process group needed)."""

from __future__ import annotations

import copy

import pytest
import torch
from dist_scenarios import Multimodal, MultiTask, batch, mm_batch, mt_losses
from torch import nn

import gradsurgery as gs
from gradsurgery.accumulate import Accumulator


def _train(method: str, micro: int, *, steps: int = 3) -> tuple[MultiTask, gs.Method]:
    torch.manual_seed(0)
    model = MultiTask(3)
    m = gs.build(method)
    acc = Accumulator(m)
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    for step in range(steps):
        x, y = batch(step)
        if micro == 0:  # the whole batch in one backward
            gs.backward(mt_losses(model(x), y), {"trunk": model.trunk}, m)
        else:
            for xm, ym in zip(x.chunk(micro), y.chunk(micro)):
                acc.backward(mt_losses(model(xm), ym, 1 / micro), {"trunk": model.trunk})
            acc.step()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return model, m


def _naive(method: str, micro: int, *, steps: int = 3) -> MultiTask:
    torch.manual_seed(0)
    model = MultiTask(3)
    m = gs.build(method)
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    for step in range(steps):
        x, y = batch(step)
        for xm, ym in zip(x.chunk(micro), y.chunk(micro)):
            gs.backward(mt_losses(model(xm), ym, 1 / micro), {"trunk": model.trunk}, m)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return model


@pytest.mark.parametrize("method", ["pcgrad", "cagrad", "sum"])
@pytest.mark.parametrize("micro", [2, 4])
def test_micro_batches_equal_the_whole_batch(method: str, micro: int) -> None:
    whole, m_whole = _train(method, 0)
    parts, m_parts = _train(method, micro)
    for a, b in zip(whole.parameters(), parts.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # the seeded generator advanced once per step, not once per micro-batch
    assert str(m_whole.state_dict()) == str(m_parts.state_dict())


def test_one_backward_per_micro_batch_is_not_the_whole_batch_step() -> None:
    # what the accumulator fixes: m(G1) + m(G2) != m(G1 + G2)
    whole, _ = _train("pcgrad", 0)
    naive = _naive("pcgrad", 2)
    gap = max((a - b).abs().max().item() for a, b in zip(whole.parameters(), naive.parameters()))
    assert gap > 1e-4


def test_state_advances_once_per_step_and_signals_are_averaged() -> None:
    torch.manual_seed(0)
    model = Multimodal()
    twin = copy.deepcopy(model)
    method, whole = gs.OGMGE(ge=False), gs.OGMGE(ge=False)
    acc = Accumulator(method)
    xa, xv, y, _ = mm_batch(0)
    for part in (slice(0, 6), slice(6, 16)):  # uneven micro-batches, weighted by size
        feats, logits, _ = model(xa[part], xv[part])
        n = logits.shape[0]
        signals = gs.signals.modality_confidences(feats, classifier=model.cls, targets=y[part])
        loss = nn.functional.cross_entropy(logits, y[part]) * n / 16
        acc.backward({"cls": loss}, dict(model.enc), signals, batch_size=n)
    report = acc.step()
    feats, logits, _ = twin(xa, xv)
    signals = gs.signals.modality_confidences(feats, classifier=twin.cls, targets=y)
    ref = gs.backward(
        {"cls": nn.functional.cross_entropy(logits, y)}, dict(twin.enc), whole, signals
    )
    assert method.step == whole.step == 1
    for block in ("a", "v"):
        assert report.blocks[block].details["rho"] == pytest.approx(
            ref.blocks[block].details["rho"], rel=1e-6
        )
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)


def test_misuse_is_refused() -> None:
    torch.manual_seed(0)
    model = MultiTask(2)
    acc = Accumulator(gs.PCGrad())
    with pytest.raises(RuntimeError, match="no micro-batch"):
        acc.step()
    x, y = batch(0, 2)
    acc.backward(mt_losses(model(x), y), {"trunk": model.trunk}, batch_size=8)
    with pytest.raises(ValueError, match="some micro-batches only"):
        acc.backward(mt_losses(model(x), y), {"trunk": model.trunk})
    with pytest.raises(ValueError, match="different parameters"):
        acc.backward(mt_losses(model(x), y), {"trunk": model.trunk[0]}, batch_size=8)
    assert acc.pending and acc.micro_batches == 1
    acc.reset()
    assert not acc.pending
