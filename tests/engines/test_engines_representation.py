"""The representation engine: decisions on output gradients, one backward into the block."""

from __future__ import annotations

import pytest
import torch
from engine_models import Setup, assert_grads_close, make, mlp, step
from torch import nn

import gradsurgery as gs
from gradsurgery.engines.representation import RepresentationEngine
from gradsurgery.engines.table import TableEngine

RTOL, ATOL = 2e-5, 1e-6


def rep(h: torch.Tensor) -> RepresentationEngine:
    return RepresentationEngine({"trunk": h})


def plain(setup: Setup) -> list[torch.Tensor | None]:
    for p in setup.params():
        p.grad = None
    _, losses = setup.forward()
    sum(losses.values()).backward()  # type: ignore[union-attr]
    return [None if p.grad is None else p.grad.clone() for p in setup.params()]


@pytest.mark.parametrize("name", ["mlp", "layernorm", "transformer", "conv-bn", "tied"])
def test_sum_equals_loss_backward(name: str) -> None:
    setup = make(name)
    ours, report = step(setup, gs.Sum(), rep)
    assert report.engine == "representation"
    assert_grads_close(plain(setup), ours, RTOL, ATOL)


def test_rows_are_output_gradients() -> None:
    setup = make("mlp")
    h, losses = setup.forward()
    table = gs.gradient_table(losses, {"trunk": setup.trunk}, engine=rep(h))
    block = table["trunk"]
    assert block.matrix.shape == (3, h.numel())
    expected = torch.autograd.grad(losses["t1"], h, retain_graph=True)[0]
    torch.testing.assert_close(block.matrix[1], expected.reshape(-1))


def one_linear(batch: torch.Tensor, *, bias: bool, k: int = 3, seed: int = 0) -> Setup:
    torch.manual_seed(seed)
    trunk = nn.Linear(batch.shape[1], 4, bias=bias)
    # nonlinear heads, so that the objectives' output gradients conflict in varied ways
    heads = nn.ModuleList(
        nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1)) for _ in range(k)
    )
    return Setup(trunk, heads, batch)


def _exact_cases() -> list[tuple[str, torch.Tensor, bool]]:
    torch.manual_seed(5)
    q, _ = torch.linalg.qr(torch.randn(6, 6))
    return [
        ("batch of one, with bias", torch.randn(1, 5), True),
        ("orthogonal inputs of equal norm, no bias", 2.5 * q[:3], False),
    ]


@pytest.mark.parametrize("method", ["pcgrad", "cagrad", "mgda", "upgrad"])
@pytest.mark.parametrize(("case", "x", "bias"), _exact_cases())
@pytest.mark.parametrize("seed", range(4))
def test_equals_the_exact_method_when_jjt_is_a_multiple_of_identity(
    method: str, case: str, x: torch.Tensor, bias: bool, seed: int
) -> None:
    """One linear layer Z = A Wᵀ + b: g_i = Δ_iᵀ A (and 1ᵀΔ_i), so the parameter Gramian is
    tr(Δ_iᵀ (A Aᵀ + 11ᵀ) Δ_j); with A Aᵀ + 11ᵀ = c·I (a batch of one: c = ‖a‖² + 1; without
    bias, orthogonal rows of norm r: c = r²) it is c times the output Gramian. These
    methods' weights do not change when the Gramian is scaled by c > 0, and the update is
    linear in the rows: the representation-level step is the exact step."""
    if method not in gs.available():
        pytest.skip(f"{method} is not registered")
    setup = one_linear(x, bias=bias, seed=seed)
    a, ra = step(setup, gs.build(method), TableEngine())
    b, rb = step(setup, gs.build(method), rep)
    torch.testing.assert_close(
        ra.blocks["trunk"].weights, rb.blocks["trunk"].weights, rtol=1e-4, atol=1e-6
    )
    assert_grads_close(a, b, 1e-4, 1e-6)


def test_differs_from_the_exact_method_on_a_batch() -> None:
    """On a batch, A Aᵀ mixes the samples: the decisions are close but not the same."""
    torch.manual_seed(0)
    trunk = mlp([8, 32, 32])
    heads = nn.ModuleList(
        nn.Sequential(nn.Linear(32, 8), nn.Tanh(), nn.Linear(8, 1)) for _ in range(4)
    )
    setup = Setup(trunk, heads, torch.randn(64, 8))
    a, ra = step(setup, gs.PCGrad(), TableEngine())
    b, rb = step(setup, gs.PCGrad(), rep)
    wa, wb = ra.blocks["trunk"].weights, rb.blocks["trunk"].weights
    assert not torch.allclose(wa, wb, rtol=1e-6, atol=0)
    ua = torch.cat([g.reshape(-1) for g in a[:4] if g is not None])
    ub = torch.cat([g.reshape(-1) for g in b[:4] if g is not None])
    cosine = torch.nn.functional.cosine_similarity(ua, ub, dim=0)
    assert cosine > 0.9


def test_head_parameters_get_the_plain_sum() -> None:
    setup = make("layernorm")
    ours, _ = step(setup, gs.PCGrad(), rep)
    n = len(list(setup.heads.parameters()))
    assert_grads_close(plain(setup)[-n:], ours[-n:], RTOL, ATOL)


def test_nested_blocks_with_sum_are_exact() -> None:
    torch.manual_seed(0)
    low, high = nn.Linear(5, 6), nn.Linear(6, 4)
    heads = [nn.Linear(4, 1), nn.Linear(6, 1)]  # the second head reads the lower features
    x = torch.randn(7, 5)
    params = [*low.parameters(), *high.parameters(), *(p for h in heads for p in h.parameters())]

    def run(engine: object | None) -> list[torch.Tensor]:
        for p in params:
            p.grad = None
        z1 = torch.tanh(low(x))
        z2 = torch.tanh(high(z1))
        losses = {"a": heads[0](z2).pow(2).mean(), "b": heads[1](z1).pow(2).mean()}
        if engine is None:
            sum(losses.values()).backward()  # type: ignore[union-attr]
        else:
            features = {"low": z1, "high": z2}
            gs.backward(
                losses, {"low": low, "high": high}, gs.Sum(), engine=RepresentationEngine(features)
            )
        return [p.grad.clone() for p in params]  # type: ignore[union-attr]

    for g, h in zip(run(None), run(True)):
        torch.testing.assert_close(g, h, rtol=RTOL, atol=ATOL)


def test_leaves_below_the_features_outside_the_blocks_get_the_plain_sum() -> None:
    torch.manual_seed(0)
    stem = nn.Linear(5, 6)  # not in any block, under the trunk
    setup = make("mlp")
    x = setup.x
    params = [*stem.parameters(), *setup.params()]

    def run(ours: bool) -> list[torch.Tensor]:
        for p in params:
            p.grad = None
        setup.x = torch.tanh(stem(x))[:, :5]
        h, losses = setup.forward()
        if ours:
            gs.backward(losses, {"trunk": setup.trunk}, gs.PCGrad(), engine=rep(h))
        else:
            gs.backward(losses, {"trunk": setup.trunk}, gs.PCGrad(), engine=TableEngine())
        return [p.grad.clone() for p in stem.parameters()]  # type: ignore[union-attr]

    # the stem is outside the blocks: the plain sum, whatever the method does to the trunk
    for g, h in zip(run(False), run(True)):
        torch.testing.assert_close(g, h, rtol=RTOL, atol=ATOL)


def test_extra_losses_reach_block_parameters_directly() -> None:
    setup = make("mlp")

    def run(engine: object) -> list[torch.Tensor | None]:
        for p in setup.params():
            p.grad = None
        h, losses = setup.forward()
        reg = sum((p**2).sum() for p in setup.trunk.parameters()) * 1e-2
        chosen = engine(h) if callable(engine) else engine
        gs.backward(losses, {"trunk": setup.trunk}, gs.Sum(), engine=chosen, extra=[reg])  # type: ignore[arg-type]
        return [p.grad for p in setup.params()]

    assert_grads_close(run(TableEngine()), run(rep), RTOL, ATOL)


def test_graph_is_freed_after_writing_unless_retained() -> None:
    setup = make("mlp")
    h, losses = setup.forward()
    table = gs.gradient_table(losses, {"trunk": setup.trunk}, engine=rep(h))
    updates, report = gs.Sum().apply(table)
    gs.write_grads(table, updates, report)
    with pytest.raises(RuntimeError, match="retain_graph=True to write it again"):
        gs.write_grads(table, updates, report)
    h, losses = setup.forward()
    table = gs.gradient_table(losses, {"trunk": setup.trunk}, engine=rep(h), retain_graph=True)
    gs.write_grads(table, updates, report)
    gs.write_grads(table, updates, report)


def test_missing_or_unusable_features_are_refused() -> None:
    setup = make("mlp")
    h, losses = setup.forward()
    blocks = {"trunk": setup.trunk}
    with pytest.raises(ValueError, match="needs each block's output tensor"):
        gs.gradient_table(losses, blocks, engine=RepresentationEngine())
    with pytest.raises(ValueError, match=r"missing \['trunk'\], unknown \['body'\]"):
        gs.gradient_table(losses, blocks, engine=RepresentationEngine({"body": h}))
    with pytest.raises(ValueError, match="no grad_fn"):
        gs.gradient_table(losses, blocks, engine=RepresentationEngine({"trunk": h.detach()}))
    with pytest.raises(ValueError, match=r"only through its features.*'0.weight'"):
        gs.gradient_table(losses, blocks, engine=RepresentationEngine({"trunk": losses["t0"] * 1}))
    other = nn.Linear(5, 4)
    z = other(setup.x)
    with pytest.raises(ValueError, match="none of its parameters is under its features"):
        gs.gradient_table(
            {"a": z.sum()},
            {"trunk": other, "body": setup.trunk},
            engine=RepresentationEngine({"trunk": z, "body": z * 2}),
        )


def test_parameters_that_bypass_the_features_are_refused() -> None:
    setup = make("mlp")
    h, losses = setup.forward()
    losses["t0"] = losses["t0"] + setup.trunk[0].weight.sum()
    with pytest.raises(ValueError, match=r"only\s+through its features.*'0.weight'"):
        gs.gradient_table(losses, {"trunk": setup.trunk}, engine=rep(h))


def test_objective_reaching_no_feature_is_refused() -> None:
    setup = make("mlp", k=2)
    h, losses = setup.forward()
    losses["free"] = setup.heads[0].weight.sum()
    with pytest.raises(ValueError, match="'free' does not depend on any block's features"):
        gs.gradient_table(losses, {"trunk": setup.trunk}, engine=rep(h))
