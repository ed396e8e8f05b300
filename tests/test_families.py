"""Method families, traits, scope, the registry's filters and hyper-parameter checks."""

from __future__ import annotations

import pytest
import torch
from helpers import matrices
from hypothesis import given

import gradsurgery as gs
from gradsurgery.core.checks import check


class Softmin(gs.LossWeighting):
    """A toy loss weighting: weights ∝ exp(−L_i), summing to k."""

    name = "softmin-test"

    def weigh_losses(self, context: gs.Context) -> gs.Decision:
        w = torch.softmax(-context.losses, 0) * context.k
        return gs.Decision(w)


class SignDrop(gs.ElementwiseMethod):
    """A toy element-wise method: keep only entries where every row agrees in sign."""

    name = "signdrop-test"

    def transform(self, block: gs.BlockGradients, decision: gs.Decision) -> torch.Tensor:
        G = block.matrix
        agree = (G > 0).all(0) | (G < 0).all(0)
        return G.sum(0) * agree


def test_loss_weighting_reads_the_tables_loss_values() -> None:
    G = torch.eye(2, dtype=torch.float64)
    method = Softmin()
    out = method(G, losses=[0.0, 1.0])
    w = torch.softmax(-torch.tensor([0.0, 1.0], dtype=torch.float64), 0) * 2
    torch.testing.assert_close(out, w)
    with pytest.raises(ValueError, match="reads the objectives' loss values, but the table"):
        method(G)


def test_loss_weighting_through_backward_gets_the_detached_losses() -> None:
    lin = torch.nn.Linear(2, 1, bias=False)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out = lin(x).squeeze(1)
    report = gs.backward({"a": out[0] ** 2, "b": 3 * out[1] ** 2}, {"lin": lin}, Softmin())
    losses = torch.stack([out[0] ** 2, 3 * out[1] ** 2]).detach().double()
    torch.testing.assert_close(report.blocks["lin"].weights, torch.softmax(-losses, 0) * 2)


def test_elementwise_family_is_marked_non_linear() -> None:
    G = torch.tensor([[1.0, -1.0, 2.0], [3.0, 1.0, -1.0]])
    method = SignDrop()
    torch.testing.assert_close(method(G), torch.tensor([4.0, 0.0, 0.0]))
    block = method.last_report.blocks["block"]
    assert block.linear is False and block.changed is True


@given(G=matrices(k=3, max_p=4), H=matrices(k=3, max_p=4))
def test_global_scope_equals_one_merged_block(G: torch.Tensor, H: torch.Tensor) -> None:
    for make in (lambda: gs.CAGrad(scope="global"), lambda: gs.PCGrad(scope="global", seed=1)):
        split = make().apply(gs.GradientTable.from_matrices({"a": G, "b": H}))[0]
        merged = make()(torch.cat([G, H], 1))
        joined = torch.cat([split["a"], split["b"]])
        torch.testing.assert_close(joined, merged, rtol=1e-7, atol=1e-7)


def test_block_scope_decides_per_block() -> None:
    G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    H = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    updates, report = gs.PCGrad().apply(gs.GradientTable.from_matrices({"g": G, "h": H}))
    assert report.blocks["g"].changed and not report.blocks["h"].changed
    torch.testing.assert_close(updates["h"], H.sum(0))


def test_available_filters_by_kind_family_and_objectives() -> None:
    multitask = gs.available(kind="multitask")
    multimodal = gs.available(kind="multimodal")
    assert {"sum", "mean", "pcgrad", "cagrad"} <= set(multitask)
    assert "gmp" not in multitask and "ogmge" not in multitask
    assert {"gmp", "ogmge", "sum"} <= set(multimodal)
    assert "ogmge" not in gs.available(objectives=2)
    assert set(gs.available(family="cross_block")) >= {"gmp", "ogmge"}
    for name in multitask:  # every multi-task method runs on a 3-task table
        gs.build(name)(torch.randn(3, 4), losses=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="kind must be one of"):
        gs.available(kind="vision")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cfg", "error", "message"),
    [
        ({"method": "ogmge", "eps": -0.5}, ValueError, "eps must be >= 0.0"),
        ({"method": "ogmge", "ge": "false"}, TypeError, "ge must be a bool, got 'false'"),
        ({"method": "cagrad", "c": True}, TypeError, "c must be a number"),
        ({"method": "cagrad", "rescale": True}, TypeError, "rescale must be an int"),
        ({"method": "pcgrad", "seed": 1.7}, TypeError, "seed must be an int"),
        ({"method": "cagrad", "c": float("nan")}, ValueError, "c must be finite"),
        ({"method": "gmp", "projection": "sideways"}, ValueError, "projection must be one of"),
        ({"method": "pcgrad", "scope": "everything"}, ValueError, "scope must be one of"),
        ({"method": "ogmge", "end_epoch": 2.5}, TypeError, "end_epoch must be an int or None"),
    ],
)
def test_config_typos_are_errors(cfg: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        gs.build(cfg)


def test_check_helper() -> None:
    assert check("x", 1, "float") == 1.0 and isinstance(check("x", 1, "float"), float)
    assert check("x", None, "int", optional=True) is None
    with pytest.raises(ValueError, match="x must be > 0"):
        check("x", 0.0, "float", low=0.0, low_open=True)
    with pytest.raises(ValueError, match="x must be <= 1"):
        check("x", 2, "int", high=1)


def test_register_refuses_non_methods_and_nameless_ones() -> None:
    with pytest.raises(TypeError, match="expected a Method subclass"):
        gs.register(int)  # type: ignore[type-var]

    class Nameless(gs.GramianWeighting):
        def weigh(self, context: gs.Context) -> gs.Decision:
            return gs.Decision(torch.ones(context.k, dtype=torch.float64))

    with pytest.raises(ValueError, match="has no `name`"):
        gs.register(Nameless)
