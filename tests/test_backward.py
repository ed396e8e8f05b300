"""End-to-end: ``gradsurgery.backward`` on real models, against autograd."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import gradsurgery as gs


class TwoTask(nn.Module):
    """A shared trunk with two task heads."""

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 8), nn.Tanh())
        self.head1 = nn.Linear(8, 1)
        self.head2 = nn.Linear(8, 3)
        self.to(dtype)

    def losses(self, x: torch.Tensor, y1: torch.Tensor, y2: torch.Tensor) -> dict:
        h = self.trunk(x)
        return {
            "regression": nn.functional.mse_loss(self.head1(h).squeeze(-1), y1),
            "classification": nn.functional.cross_entropy(self.head2(h), y2),
        }


def batch(dtype: torch.dtype = torch.float32, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 6, generator=gen, dtype=dtype)
    return x, x[:, 0] - x[:, 1], (x[:, 2] > 0).long() + (x[:, 3] > 0).long()


def grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_sum_reproduces_autograd_in_float64() -> None:
    torch.manual_seed(0)
    model = TwoTask(torch.float64)
    twin = copy.deepcopy(model)
    data = batch(torch.float64)
    losses = twin.losses(*data)
    (losses["regression"] + losses["classification"]).backward()
    report = gs.backward(model.losses(*data), {"trunk": model.trunk.parameters()}, gs.Sum())
    assert report.changed is False
    expected = grads(twin)
    for name, g in grads(model).items():
        torch.testing.assert_close(g, expected[name], rtol=1e-12, atol=1e-14, msg=name)


@pytest.mark.parametrize("method", [gs.PCGrad(), gs.CAGrad(), gs.Mean()])
def test_heads_get_the_autograd_gradient_and_trunk_the_method_update(method: gs.Method) -> None:
    torch.manual_seed(0)
    model = TwoTask()
    twin = copy.deepcopy(model)
    data = batch()
    losses = twin.losses(*data)
    (losses["regression"] + losses["classification"]).backward()
    gs.backward(model.losses(*data), {"trunk": model.trunk.parameters()}, method)
    expected = grads(twin)
    for name, g in grads(model).items():
        if name.startswith("head"):
            torch.testing.assert_close(g, expected[name], msg=name)
    # The trunk holds the method's update of the per-objective gradients.
    losses = twin.losses(*data)
    rows = []
    for loss in losses.values():
        gs_ = torch.autograd.grad(loss, list(twin.trunk.parameters()), retain_graph=True)
        rows.append(torch.cat([g.reshape(-1) for g in gs_]))
    weights = method.last_report.blocks["trunk"].weights
    update = weights.float() @ torch.stack(rows)
    got = torch.cat([p.grad.reshape(-1) for p in model.trunk.parameters()])
    torch.testing.assert_close(got, update, rtol=1e-5, atol=1e-6)


def test_accumulates_into_existing_grad_like_autograd() -> None:
    torch.manual_seed(0)
    model = TwoTask(torch.float64)
    data = batch(torch.float64)
    gs.backward(model.losses(*data), {"trunk": model.trunk.parameters()}, gs.PCGrad())
    once = grads(model)
    gs.backward(model.losses(*data), {"trunk": model.trunk.parameters()}, gs.PCGrad())
    for name, g in grads(model).items():
        torch.testing.assert_close(g, 2 * once[name], msg=name)


@pytest.mark.parametrize("name", ["sum", "mean", "pcgrad", "cagrad"])
def test_trains_with_adam_scheduler_clipping_and_zero_grad(name: str) -> None:
    torch.manual_seed(0)
    model = TwoTask()
    method = gs.build(name)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=50, gamma=0.5)
    data = batch(seed=1)
    first = None
    for _ in range(150):
        opt.zero_grad(set_to_none=True)
        losses = model.losses(*data)
        total = sum(float(v.detach()) for v in losses.values())
        first = total if first is None else first
        gs.backward(losses, {"trunk": model.trunk.parameters()}, method)
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
    assert total < 0.5 * first


def test_several_blocks_and_unreached_parameters() -> None:
    a = nn.Linear(3, 2)
    b = nn.Linear(3, 2)
    unused = nn.Parameter(torch.ones(4))
    x = torch.randn(5, 3)
    losses = {"only_a": a(x).pow(2).mean(), "both": (a(x) + b(x)).sum()}
    report = gs.backward(losses, {"a": a.parameters(), "b": [*b.parameters(), unused]}, gs.PCGrad())
    assert unused.grad is None
    assert any("parameter '#2'" in n and "reached by no objective" in n for n in report.notes)
    # 'only_a' does not reach block b: its row there is zero, so b gets the plain 'both' grad.
    assert report.blocks["b"].weights.tolist() == [1.0, 1.0]
    expected = torch.autograd.grad((a(x) + b(x)).sum(), list(b.parameters()))
    for p, g in zip(b.parameters(), expected):
        torch.testing.assert_close(p.grad, g)


def test_bad_losses_and_blocks() -> None:
    lin = nn.Linear(3, 1)
    other = nn.Linear(3, 1)
    x = torch.randn(4, 3)
    blocks = {"lin": lin.parameters()}
    with pytest.raises(ValueError, match="objective 'l': loss must be a scalar"):
        gs.backward({"l": lin(x)}, blocks, gs.Sum())
    with pytest.raises(ValueError, match="objective 'l': loss does not require grad"):
        gs.backward({"l": torch.tensor(1.0)}, blocks, gs.Sum())
    with pytest.raises(ValueError, match="objective 'b' does not depend on any block parameter"):
        gs.backward({"a": lin(x).sum(), "b": other(x).sum()}, {"lin": lin.parameters()}, gs.Sum())
    with pytest.raises(ValueError, match="block 'other': no objective reaches"):
        gs.backward(
            {"a": lin(x).sum()}, {"lin": lin.parameters(), "other": other.parameters()}, gs.Sum()
        )
    with pytest.raises(TypeError, match="method must be a gradsurgery Method"):
        gs.backward({"a": lin(x).sum()}, blocks, "pcgrad")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="losses must be a mapping"):
        gs.backward(lin(x).sum(), blocks, gs.Sum())  # type: ignore[arg-type]


def test_nonfinite_gradient_raises_or_skips() -> None:
    lin = nn.Linear(2, 1)
    x = torch.tensor([[1.0, float("inf")]])
    with pytest.raises(gs.NonFiniteGradientError, match="block 'lin', objective.*'bad'"):
        gs.backward(
            {"good": lin.weight.sum(), "bad": lin(x).sum()}, {"lin": lin.parameters()}, gs.PCGrad()
        )
    lin.zero_grad(set_to_none=True)
    report = gs.backward(
        {"good": lin.weight.sum(), "bad": lin(x).sum()},
        {"lin": lin.parameters()},
        gs.PCGrad(),
        on_nonfinite="skip",
    )
    assert report.skipped
    assert not torch.isfinite(lin.weight.grad).all()


def test_grad_scaler_style_loss_scaling_is_harmless() -> None:
    # Positive homogeneity makes scaled losses give scaled updates (what GradScaler needs).
    torch.manual_seed(0)
    model = TwoTask(torch.float64)
    twin = copy.deepcopy(model)
    data = batch(torch.float64)
    gs.backward(model.losses(*data), {"trunk": model.trunk.parameters()}, gs.CAGrad())
    scaled = {k: 1024.0 * v for k, v in twin.losses(*data).items()}
    gs.backward(scaled, {"trunk": twin.trunk.parameters()}, gs.CAGrad())
    for (name, g), g2 in zip(grads(model).items(), grads(twin).values()):
        torch.testing.assert_close(g2 / 1024.0, g, rtol=1e-6, atol=1e-10, msg=name)


def test_grad_scaler_unscales_and_skips_non_finite_steps() -> None:
    torch.manual_seed(0)
    model = TwoTask()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    data = batch()
    twin = copy.deepcopy(model)
    # A finite step: after unscale_, .grad equals the unscaled method update.
    losses = {k: scaler.scale(v) for k, v in model.losses(*data).items()}
    gs.backward(losses, {"trunk": model.trunk.parameters()}, gs.PCGrad())
    scaler.unscale_(opt)
    gs.backward(twin.losses(*data), {"trunk": twin.trunk.parameters()}, gs.PCGrad())
    for (name, g), g2 in zip(grads(model).items(), grads(twin).values()):
        torch.testing.assert_close(g, g2, rtol=1e-4, atol=1e-7, msg=name)
    scaler.step(opt)
    scaler.update()
    # A non-finite step with on_nonfinite="skip": the scaler skips it and lowers its scale.
    opt.zero_grad(set_to_none=True)
    before = [p.detach().clone() for p in model.parameters()]
    losses = {k: scaler.scale(v) for k, v in model.losses(*data).items()}
    losses["regression"] = losses["regression"] * float("inf")
    report = gs.backward(
        losses, {"trunk": model.trunk.parameters()}, gs.PCGrad(), on_nonfinite="skip"
    )
    assert report.skipped
    scale = scaler.get_scale()
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() < scale
    for p, b in zip(model.parameters(), before):
        torch.testing.assert_close(p.detach(), b, rtol=0, atol=0)
