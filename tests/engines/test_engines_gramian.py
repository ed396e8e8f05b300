"""The Gramian engine: same Gramian and same update as the table engine, without the rows."""

from __future__ import annotations

import pytest
import torch
from engine_models import TRUNKS, Setup, assert_grads_close, make, mlp, step
from torch import nn
from torch.utils.checkpoint import checkpoint

import gradsurgery as gs
from gradsurgery.core.blocks import make_blocks
from gradsurgery.core.gramian import GramianPolicy
from gradsurgery.engines.gramian import GramianEngine
from gradsurgery.engines.table import TableEngine
from gradsurgery.registry import get

RTOL, ATOL = 2e-5, 1e-6


def tables(setup: Setup, engine: object, **kwargs: object) -> gs.GradientTable:
    _, losses = setup.forward()
    blocks = make_blocks({"trunk": setup.trunk})
    return engine.build(losses, blocks, policy=GramianPolicy(), **kwargs)  # type: ignore[attr-defined]


@pytest.mark.parametrize("factorize", ["auto", "always", "never"])
@pytest.mark.parametrize("name", TRUNKS)
def test_gramian_and_pcgrad_update_equal_the_table_engine(name: str, factorize: str) -> None:
    setup = make(name)
    exact = tables(setup, TableEngine())["trunk"].gramian
    light = tables(setup, GramianEngine(factorize=factorize))["trunk"]  # type: ignore[arg-type]
    assert not light.has_rows
    torch.testing.assert_close(light.gramian, exact, rtol=RTOL, atol=ATOL * exact.abs().max())
    a, ra = step(setup, gs.PCGrad(seed=3), TableEngine())
    b, rb = step(setup, gs.PCGrad(seed=3), GramianEngine(factorize=factorize))  # type: ignore[arg-type]
    assert_grads_close(a, b, RTOL, ATOL)
    assert rb.engine == "gramian"
    torch.testing.assert_close(
        ra.blocks["trunk"].weights, rb.blocks["trunk"].weights, rtol=1e-5, atol=1e-7
    )


def _exact_methods() -> list[str]:
    out = []
    for name in gs.available(kind="multitask"):
        cls = get(name)
        if cls.needs_rows or cls.needs_signals or cls.family not in ("gramian", "loss"):
            continue
        out.append(name)
    return out


@pytest.mark.parametrize("method", _exact_methods())
def test_every_gramian_and_loss_method_gets_the_table_update(method: str) -> None:
    setup = make("mlp", k=3, seed=1)
    a, _ = step(setup, gs.build(method), TableEngine())
    b, _ = step(setup, gs.build(method), GramianEngine(factorize="always"))
    assert_grads_close(a, b, 1e-4, 1e-6)


def test_float64_is_exact_to_rounding() -> None:
    setup = make("transformer", dtype=torch.float64)
    a, _ = step(setup, gs.CAGrad(), TableEngine())
    b, _ = step(setup, gs.CAGrad(), GramianEngine(factorize="always"))
    assert_grads_close(a, b, 1e-10, 1e-12)


def test_factorized_layers_keep_no_rows_and_fewer_numbers() -> None:
    torch.manual_seed(0)
    trunk = mlp([64, 128, 128])
    setup = Setup(trunk, nn.ModuleList(nn.Linear(128, 1) for _ in range(4)), torch.randn(16, 64))
    block = tables(setup, GramianEngine())["trunk"]
    source = block.source
    assert source is not None
    assert source.rows_numel == 0 and source.notes == []  # type: ignore[attr-defined]
    held = sum(
        t.numel()
        for layer, _ in source._layers  # type: ignore[attr-defined]
        for t in [*layer.inputs, *(d for d in layer.deltas if d is not None)]
    )
    assert held < block.k * block.numel / 2


def test_auto_keeps_rows_where_factors_would_be_larger() -> None:
    setup = make("mlp")  # 9 input rows for layers 5->7, 7->6, 6->4: rows are smaller
    source = tables(setup, GramianEngine())["trunk"].source
    assert source is not None
    assert source.rows_numel == sum(p.numel() for p in setup.trunk.parameters())  # type: ignore[attr-defined]
    assert any("factorizing would hold" in n for n in source.notes)  # type: ignore[attr-defined]


def test_notes_name_the_parameters_kept_as_rows() -> None:
    setup = make("conv-bn")
    source = tables(setup, GramianEngine(factorize="always"))["trunk"].source
    notes = " ".join(source.notes)  # type: ignore[union-attr]
    assert "'0.weight'" in notes and "ConvolutionBackward0" in notes
    assert "'1.weight'" in notes and "NativeBatchNormBackward0" in notes
    assert "'5.weight'" not in notes  # the linear layer is factorized


def test_max_row_fraction_refuses_a_heavy_fallback() -> None:
    setup = make("conv-bn")
    with pytest.raises(ValueError, match=r"kept as per-objective rows.*ConvolutionBackward0"):
        tables(setup, GramianEngine(factorize="always", max_row_fraction=0.1))


def test_tied_weights_are_factorized_over_both_uses() -> None:
    setup = make("tied")
    source = tables(setup, GramianEngine(factorize="always"))["trunk"].source
    assert source.rows_numel == 0  # type: ignore[union-attr]
    (layer, _), _ = source._layers  # type: ignore[union-attr]
    assert len(layer.frontiers) == 2


def test_outside_parameters_get_the_plain_sum_and_extra_losses_add_everywhere() -> None:
    setup = make("layernorm")

    def run(engine: object) -> list[torch.Tensor | None]:
        for p in setup.params():
            p.grad = None
        _, losses = setup.forward()
        reg = sum((p**2).sum() for p in setup.params()) * 1e-2
        gs.backward(
            losses,
            {"trunk": setup.trunk},
            gs.PCGrad(),
            engine=engine,
            extra={"reg": reg},  # type: ignore[arg-type]
        )
        return [p.grad for p in setup.params()]

    assert_grads_close(run(TableEngine()), run(GramianEngine(factorize="always")), RTOL, ATOL)
    # the heads: the plain sum of the objectives' gradients plus the regularizer's
    for p in setup.params():
        p.grad = None
    _, losses = setup.forward()
    reg = sum((p**2).sum() for p in setup.params()) * 1e-2
    (sum(losses.values()) + reg).backward()  # type: ignore[union-attr]
    plain = [p.grad for p in setup.heads.parameters()]
    ours = run(GramianEngine(factorize="always"))[-len(plain) :]
    assert_grads_close(plain, ours, RTOL, ATOL)


def test_sum_equals_loss_backward() -> None:
    setup = make("transformer")
    for p in setup.params():
        p.grad = None
    _, losses = setup.forward()
    sum(losses.values()).backward()  # type: ignore[union-attr]
    plain = [p.grad.clone() for p in setup.params()]  # type: ignore[union-attr]
    ours, _ = step(setup, gs.Sum(), GramianEngine(factorize="always"))
    assert_grads_close(plain, ours, RTOL, ATOL)


def test_one_objective_and_retain_graph() -> None:
    setup = make("mlp", k=1)
    for p in setup.params():
        p.grad = None
    _, losses = setup.forward()
    gs.backward(losses, {"trunk": setup.trunk}, gs.Sum(), engine=GramianEngine(), retain_graph=True)  # type: ignore[arg-type]
    first = [p.grad.clone() for p in setup.params()]  # type: ignore[union-attr]
    gs.backward(losses, {"trunk": setup.trunk}, gs.Sum(), engine=GramianEngine())  # type: ignore[arg-type]
    assert_grads_close([2 * g for g in first], [p.grad for p in setup.params()], RTOL, ATOL)


def test_the_graph_is_freed_after_the_last_pass() -> None:
    setup = make("mlp")
    _, losses = setup.forward()
    gs.backward(losses, {"trunk": setup.trunk}, gs.PCGrad(), engine=GramianEngine())  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="second time"):
        sum(losses.values()).backward()  # type: ignore[union-attr]


def test_unreached_parameter_keeps_its_grad_and_is_noted() -> None:
    torch.manual_seed(0)
    trunk = nn.ModuleDict({"used": nn.Linear(4, 5), "unused": nn.Linear(4, 5)})
    heads = [nn.Linear(5, 1) for _ in range(2)]
    x = torch.randn(6, 4)
    h = trunk["used"](x)
    losses = {f"t{i}": head(h).pow(2).mean() for i, head in enumerate(heads)}
    report = gs.backward(losses, {"trunk": trunk}, gs.PCGrad(), engine=GramianEngine())  # type: ignore[arg-type]
    assert trunk["unused"].weight.grad is None
    assert trunk["used"].weight.grad is not None
    assert any("reached by no objective" in n for n in report.notes)


def test_objective_reaching_no_block_is_refused() -> None:
    setup = make("mlp", k=2)
    _, losses = setup.forward()
    losses["free"] = setup.heads[0].weight.sum()
    with pytest.raises(ValueError, match="'free' does not depend on any block parameter"):
        gs.backward(losses, {"trunk": setup.trunk}, gs.PCGrad(), engine=GramianEngine())  # type: ignore[arg-type]


def test_methods_that_read_rows_are_refused() -> None:
    setup = make("mlp")
    _, losses = setup.forward()
    with pytest.raises(ValueError, match="does not keep; use engine='table'"):
        gs.backward(losses, {"trunk": setup.trunk}, gs.build("dbmtl"), engine=GramianEngine())  # type: ignore[arg-type]


@pytest.mark.parametrize("factorize", ["always", "never"])
def test_nonfinite_rows_raise_or_skip(factorize: str) -> None:
    setup = make("mlp")
    _, losses = setup.forward()
    losses["t1"] = losses["t1"] * float("nan")
    with pytest.raises(gs.NonFiniteGradientError):
        gs.backward(
            losses,
            {"trunk": setup.trunk},
            gs.PCGrad(),
            engine=GramianEngine(factorize=factorize),  # type: ignore[arg-type]
            retain_graph=True,
        )
    report = gs.backward(
        losses,
        {"trunk": setup.trunk},
        gs.PCGrad(),
        engine=GramianEngine(factorize=factorize),  # type: ignore[arg-type]
        on_nonfinite="skip",
    )
    assert report.skipped


def test_tiny_rows_are_rescaled_like_compute_gramian() -> None:
    setup = make("mlp-no-bias", k=2)
    with torch.no_grad():
        for p in setup.heads.parameters():
            p.mul_(1e-22)
    exact = tables(setup, TableEngine())["trunk"].gramian
    light = tables(setup, GramianEngine(factorize="always"))["trunk"].gramian
    assert exact.abs().max() > 0
    torch.testing.assert_close(light, exact, rtol=1e-4, atol=0)


def test_gramian_policy_native_and_float32() -> None:
    setup = make("mlp")
    policy = GramianPolicy(device="native", dtype=torch.float32)
    _, losses = setup.forward()
    table = GramianEngine().build(losses, make_blocks({"trunk": setup.trunk}), policy=policy)
    assert table["trunk"].gramian.dtype == torch.float32


def test_non_reentrant_checkpointing() -> None:
    setup = make("mlp")
    inner = setup.trunk

    class Checkpointed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = checkpoint(self.inner, x, use_reentrant=False)
            assert isinstance(out, torch.Tensor)
            return out

    setup.trunk = Checkpointed()
    a, _ = step(setup, gs.PCGrad(), TableEngine())
    b, _ = step(setup, gs.PCGrad(), GramianEngine(factorize="always"))
    assert_grads_close(a, b, RTOL, ATOL)


def test_bfloat16_matches_within_its_precision() -> None:
    setup = make("mlp", dtype=torch.bfloat16)
    a, _ = step(setup, gs.Sum(), TableEngine())
    b, _ = step(setup, gs.Sum(), GramianEngine(factorize="always"))
    assert_grads_close(a, b, 3e-2, 3e-2)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="factorize"):
        GramianEngine(factorize="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_row_fraction"):
        GramianEngine(max_row_fraction=2.0)
    assert "factorize='auto'" in repr(GramianEngine())


def test_factors_are_dropped_after_the_update_unless_kept() -> None:
    setup = make("mlp")
    ones = torch.ones(3, dtype=torch.float64)
    block = tables(setup, GramianEngine(factorize="always"))["trunk"]
    first = block.combine(ones)
    torch.testing.assert_close(block.combine(ones), first)  # same weights: a copy
    assert bool(block.finite())
    with pytest.raises(RuntimeError, match="keep_factors=True"):
        block.combine(2 * ones)
    with pytest.raises(RuntimeError, match="keep_factors=True"):
        _ = block.gramian  # not computed before the update
    kept = tables(setup, GramianEngine(factorize="always", keep_factors=True))["trunk"]
    torch.testing.assert_close(kept.combine(2 * ones), 2 * first)
    torch.testing.assert_close(kept.combine(ones), first)
    exact = tables(setup, TableEngine())["trunk"]
    torch.testing.assert_close(kept.gramian, exact.gramian, rtol=RTOL, atol=1e-9)


def test_a_layer_split_across_blocks() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(6, 5)
    heads = [nn.Linear(5, 1) for _ in range(3)]
    x = torch.randn(4, 6)

    def run(engine: object) -> list[torch.Tensor]:
        for p in layer.parameters():
            p.grad = None
        h = torch.tanh(layer(x))
        losses = {f"t{i}": head(h).pow(2).mean() * (i + 1) for i, head in enumerate(heads)}
        blocks = {"weight": [layer.weight], "bias": [layer.bias]}
        gs.backward(losses, blocks, gs.PCGrad(), engine=engine)  # type: ignore[arg-type]
        return [p.grad.clone() for p in layer.parameters()]  # type: ignore[union-attr]

    for a, b in zip(run(TableEngine()), run(GramianEngine(factorize="always"))):
        torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL)


def test_autocast_bfloat16_casts_are_followed() -> None:
    setup = make("mlp")
    setup.trunk = mlp([5, 16, 16])
    setup.heads = nn.ModuleList(nn.Linear(16, 1) for _ in range(3))

    def run(engine: object) -> list[torch.Tensor | None]:
        for p in setup.params():
            p.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, losses = setup.forward()
        gs.backward(losses, {"trunk": setup.trunk}, gs.Sum(), engine=engine)  # type: ignore[arg-type]
        return [p.grad for p in setup.params()]

    engine = GramianEngine(factorize="always")
    b = run(engine)
    assert_grads_close(run(TableEngine()), b, 2e-2, 2e-2)
    _, losses = setup.forward()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, losses = setup.forward()
    source = engine.build(losses, make_blocks({"trunk": setup.trunk}), policy=GramianPolicy())[
        "trunk"
    ].source
    assert source.rows_numel == 0  # type: ignore[union-attr]


def test_blocks_no_objective_reaches_are_refused() -> None:
    setup = make("mlp")
    _, losses = setup.forward()
    with pytest.raises(ValueError, match="no objective reaches any parameter"):
        gs.backward(losses, {"other": nn.Linear(2, 2)}, gs.Sum(), engine=GramianEngine())  # type: ignore[arg-type]
