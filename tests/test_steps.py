"""The three steps of ``backward``, losses as users write them, hooks, and refused graphs."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import gradsurgery as gs


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(4, 8), nn.Tanh())
        self.heads = nn.ModuleList([nn.Linear(8, 1), nn.Linear(8, 1)])

    def losses(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.trunk(x)
        return [self.heads[0](h).pow(2).mean(), (self.heads[1](h) - 1).pow(2).mean()]


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _x() -> torch.Tensor:
    return torch.randn(16, 4, generator=torch.Generator().manual_seed(0))


def test_backward_is_the_composition_of_the_three_steps() -> None:
    torch.manual_seed(0)
    model = Net()
    twin = copy.deepcopy(model)
    x = _x()
    report = gs.backward(model.losses(x), {"trunk": model.trunk}, gs.PCGrad(seed=3))
    table = gs.gradient_table(twin.losses(x), {"trunk": twin.trunk})
    assert table.objectives == ("0", "1") and table.engine == "table"
    updates, report2 = gs.PCGrad(seed=3).apply(table)
    gs.write_grads(table, updates, report2)
    torch.testing.assert_close(report.blocks["trunk"].weights, report2.blocks["trunk"].weights)
    mine, theirs = _grads(model), _grads(twin)
    assert mine.keys() == theirs.keys() and len(mine) == 6
    for name in mine:
        torch.testing.assert_close(mine[name], theirs[name], rtol=0, atol=0, msg=name)


def test_table_carries_detached_loss_values_and_outside_gradients() -> None:
    torch.manual_seed(0)
    model = Net()
    losses = model.losses(_x())
    table = gs.gradient_table({"a": losses[0], "b": losses[1]}, {"trunk": model.trunk})
    torch.testing.assert_close(table.losses, torch.stack([v.detach() for v in losses]))
    assert not table.losses.requires_grad
    assert table.loss("b") == pytest.approx(float(losses[1].detach()))
    assert {id(p) for p, _ in table.outside} == {id(p) for p in model.heads.parameters()}


def test_write_grads_refuses_plain_matrix_tables_and_bad_updates() -> None:
    table = gs.GradientTable.from_matrices({"x": torch.ones(2, 3)})
    with pytest.raises(ValueError, match="block 'x' was built from a plain matrix"):
        gs.write_grads(table, {"x": torch.ones(3)})
    model = Net()
    table = gs.gradient_table(model.losses(_x()), {"trunk": model.trunk})
    with pytest.raises(ValueError, match="no update for block 'trunk'"):
        gs.write_grads(table, {})
    with pytest.raises(ValueError, match=r"expected an update of shape \(40,\)"):
        gs.write_grads(table, {"trunk": torch.ones(3)})


def test_extra_losses_get_their_plain_gradient_everywhere_they_reach() -> None:
    torch.manual_seed(0)
    model = Net()
    twin = copy.deepcopy(model)
    x = _x()

    def reg(m: Net) -> torch.Tensor:
        # Reaches one head only (no block) and the trunk (a block) through weight decay.
        return 0.1 * m.heads[0].weight.pow(2).sum() + 0.01 * m.trunk[0].weight.pow(2).sum()

    gs.backward(model.losses(x), {"trunk": model.trunk}, gs.Sum(), extra={"reg": reg(model)})
    (sum(twin.losses(x)) + reg(twin)).backward()
    mine, theirs = _grads(model), _grads(twin)
    for name in theirs:
        torch.testing.assert_close(mine[name], theirs[name], rtol=1e-6, atol=1e-7, msg=name)


def test_a_loss_that_reaches_no_block_goes_through_extra() -> None:
    model = Net()
    h = model.trunk(_x())
    head_only = model.heads[1].weight.pow(2).sum()
    with pytest.raises(ValueError, match="'reg' does not depend on any block.*extra="):
        gs.backward({"a": model.heads[0](h).sum(), "reg": head_only}, {"t": model.trunk}, gs.Sum())
    h = model.trunk(_x())
    head_only = model.heads[1].weight.pow(2).sum()
    gs.backward([model.heads[0](h).sum()], {"t": model.trunk}, gs.Sum(), extra=[head_only])
    torch.testing.assert_close(model.heads[1].weight.grad, 2 * model.heads[1].weight.detach())


def test_post_accumulate_grad_hooks_fire_once_per_parameter_and_step() -> None:
    model = Net()
    calls: dict[str, int] = {}
    for name, p in model.named_parameters():
        p.register_post_accumulate_grad_hook(
            lambda t, name=name: calls.__setitem__(name, calls.get(name, 0) + 1)
        )
    for _ in range(2):
        gs.backward(model.losses(_x()), {"trunk": model.trunk}, gs.PCGrad())
    assert calls == {name: 2 for name, _ in model.named_parameters()}


def test_tensor_and_module_hooks_see_each_objective_then_the_update() -> None:
    model = Net()
    seen: list[torch.Tensor] = []
    model.trunk[0].bias.register_hook(lambda g: seen.append(g.clone()))
    module_calls: list[int] = []
    model.trunk.register_full_backward_hook(lambda m, gi, go: module_calls.append(1))
    table = gs.gradient_table(model.losses(_x().requires_grad_()), {"trunk": model.trunk})
    method = gs.PCGrad()
    updates, report = method.apply(table)
    gs.write_grads(table, updates, report)
    # One call per objective's pass (k = 2), then one on the final gradient.
    assert len(seen) == 3 and len(module_calls) == 2
    bias = table["trunk"].split(table["trunk"].matrix[0])[1]
    torch.testing.assert_close(seen[0], bias)
    torch.testing.assert_close(seen[2], model.trunk[0].bias.grad)


def test_reentrant_checkpointing_is_refused_and_non_reentrant_works() -> None:
    torch.manual_seed(0)
    model = Net()
    x = _x()

    def run(reentrant: bool) -> list[torch.Tensor]:
        h = checkpoint(model.trunk, x.requires_grad_(), use_reentrant=reentrant)
        return [model.heads[0](h).sum(), model.heads[1](h).sum()]

    with pytest.raises(ValueError, match="use_reentrant=True.*use_reentrant=False"):
        gs.backward(run(True), {"trunk": model.trunk}, gs.Sum())
    model.zero_grad(set_to_none=True)
    gs.backward(run(False), {"trunk": model.trunk}, gs.Sum())
    twin = copy.deepcopy(model)
    twin.zero_grad(set_to_none=True)
    h = twin.trunk(x)
    (twin.heads[0](h).sum() + twin.heads[1](h).sum()).backward()
    for (name, p), q in zip(model.trunk.named_parameters(), twin.trunk.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_sparse_gradient_parameters_get_a_clear_error() -> None:
    emb = nn.Embedding(10, 3, sparse=True)
    out = emb(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"block 'emb': parameter 'weight' received a sparse"):
        gs.backward({"a": out.sum(), "b": out.pow(2).sum()}, {"emb": emb}, gs.Sum())


def test_losses_as_a_sequence_and_wrong_containers() -> None:
    model = Net()
    report = gs.backward(model.losses(_x()), {"trunk": model.trunk}, gs.Sum())
    assert report.objectives == ("0", "1")
    with pytest.raises(TypeError, match="got one tensor; for a single loss use"):
        gs.backward(model.losses(_x())[0], {"trunk": model.trunk}, gs.Sum())
    with pytest.raises(ValueError, match="losses is empty"):
        gs.backward([], {"trunk": model.trunk}, gs.Sum())


def test_reduce_hook_runs_before_the_decision() -> None:
    model = Net()
    seen: list[gs.GradientTable] = []

    def halve(table: gs.GradientTable) -> None:
        seen.append(table)
        for block in table.blocks.values():
            block.matrix.mul_(0.5)

    report = gs.backward(model.losses(_x()), {"trunk": model.trunk}, gs.Sum(), reduce=halve)
    assert len(seen) == 1 and report.engine == "table"
    twin = copy.deepcopy(model)
    twin.zero_grad(set_to_none=True)
    sum(twin.losses(_x())).backward()
    for p, q in zip(model.trunk.parameters(), twin.trunk.parameters()):
        torch.testing.assert_close(p.grad, 0.5 * q.grad)


def test_unknown_engine_and_native_gramian_policy() -> None:
    model = Net()
    with pytest.raises(KeyError, match="unknown engine 'fast'.*'table'"):
        gs.backward(model.losses(_x()), {"trunk": model.trunk}, gs.Sum(), engine="fast")
    policy = gs.GramianPolicy(device="native", dtype=torch.float32)
    table = gs.gradient_table(model.losses(_x()), {"trunk": model.trunk}, gramian=policy)
    gram = table["trunk"].gramian
    assert gram.dtype == torch.float32 and gram.device == table["trunk"].matrix.device
    with pytest.raises(ValueError, match="GramianPolicy.device"):
        gs.GramianPolicy(device="gpu")  # type: ignore[arg-type]
