"""Property families that every registered method must satisfy.

A method joins the suite through one `helpers.Case`; the first test fails when a registered
method has no case. No property returns early for any method: where a method is outside a
property by design, its case declares the exception and the test checks that instead.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from helpers import CASES, Case, matrices, run
from hypothesis import assume, given
from hypothesis import strategies as st

import gradsurgery as gs

NAMES = sorted(CASES)
STOCHASTIC = sorted(n for n in NAMES if CASES[n].seeded is not None)
DETERMINISTIC = sorted(n for n in NAMES if CASES[n].seeded is None)


def test_every_registered_method_is_in_the_suite() -> None:
    assert set(gs.available()) == set(CASES)


def _k(case: Case, draw_k: int) -> int:
    return draw_k if case.ks is None else case.ks[draw_k % len(case.ks)]


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_scale_convention_on_identical_rows(name: str, data: st.DataObject) -> None:
    case = CASES[name]
    make = case.make
    if case.scale_variant is not None:
        assert case.scale_exception, f"{name}: a scale variant needs its stated reason"
        make = case.scale_variant
    k = _k(case, data.draw(st.integers(1, 6)))
    g = data.draw(matrices(k=1))[0]
    out = run(case, g.expand(k, -1).clone(), make())
    torch.testing.assert_close(out, case.scale(k) * g, rtol=1e-9, atol=1e-9)


#: Scale factors from 1e-30 to 1e30, log-uniform.
factors = st.tuples(st.floats(1.0, 10.0), st.integers(-30, 29)).map(lambda t: t[0] * 10.0 ** t[1])


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data(), c=factors)
def test_positive_homogeneity(name: str, data: st.DataObject, c: float) -> None:
    case = CASES[name]
    G = data.draw(matrices(k=_k(case, data.draw(st.integers(1, 5)))))
    # The domain: entries 0 or ≥ 1e-100, so that at every factor (down to 1e-30) a row stays
    # on its side of the zero-row rule (norms below ~1e-154 count as zero, see
    # compute_gramian), and the weights ~1/|g| of scale-free updates fit float64.
    nonzero = G[G != 0].abs()
    assume(nonzero.numel() == 0 or float(nonzero.min()) >= 1e-100)
    method = case.make()
    a = run(case, G, method)
    if case.conditioned is not None:
        assume(case.conditioned(method))
    b = run(case, c * G)
    factor = c**case.degree
    tol = 1e-6 * (G.abs().max().item() * G.shape[0] + 1e-12) * factor
    torch.testing.assert_close(b, factor * a, rtol=1e-6, atol=tol)


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_finite_on_zero_and_rank_deficient_input(name: str, data: st.DataObject) -> None:
    case = CASES[name]
    k = _k(case, data.draw(st.integers(2, 5)))
    g = data.draw(matrices(k=1))[0]
    signs = torch.tensor(
        data.draw(st.lists(st.sampled_from([-1.0, 0.0, 1.0, 2.0]), min_size=k, max_size=k)),
        dtype=torch.float64,
    )
    for G in (torch.zeros(k, g.numel(), dtype=torch.float64), signs[:, None] * g[None]):
        out = run(case, G)
        assert torch.isfinite(out).all()
        assert out.shape == (g.numel(),)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("device", DEVICES)
def test_dtype_and_device_preserved(name: str, dtype: torch.dtype, device: str) -> None:
    case = CASES[name]
    k = _k(case, 3)
    G = torch.randn(k, 7, generator=torch.Generator().manual_seed(0)).to(dtype)
    out = run(case, G.to(device))
    assert out.dtype == dtype
    assert out.device.type == device
    assert torch.isfinite(out.float()).all()
    # Against a float64 run on the same (rounded) input: the method loses no more than the
    # output dtype's own precision.
    reference = run(case, G.double())
    eps = torch.finfo(dtype).eps
    scale = float(reference.abs().max()) + 1.0
    torch.testing.assert_close(
        out.cpu().double(), reference, rtol=8 * eps, atol=8 * eps * scale * k
    )


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_report_weights_reproduce_the_update(name: str, data: st.DataObject) -> None:
    case = CASES[name]
    G = data.draw(matrices(k=_k(case, data.draw(st.integers(1, 5)))))
    method = case.make()
    out = run(case, G, method)
    report = method.last_report
    assert report is not None and not report.skipped
    block = report.blocks["block"]
    assert block.linear == case.linear
    if case.linear:
        torch.testing.assert_close(out, block.weights @ G, rtol=1e-9, atol=1e-9)
        assert block.changed == (not bool((block.weights == 1).all()))
    else:
        assert block.changed


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_and_reset(name: str) -> None:
    case = CASES[name]
    gen = torch.Generator().manual_seed(1)
    k = _k(case, 4)
    inputs = [torch.randn(k, 5, generator=gen, dtype=torch.float64) for _ in range(6)]
    first = case.make()
    for G in inputs[:3]:
        run(case, G, first)
    saved = first.state_dict()
    assert saved["format"] == 1 and saved["method"] == first.name
    second = case.make()
    second.load_state_dict(saved)
    for G in inputs[3:]:
        torch.testing.assert_close(run(case, G, first), run(case, G, second), rtol=0, atol=0)
    fresh = case.make()
    first.reset()
    for G in inputs:
        torch.testing.assert_close(run(case, G, first), run(case, G, fresh), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_load_state_dict_rejects_other_hyperparameters_and_formats(name: str) -> None:
    case = CASES[name]
    saved = case.make().state_dict()
    saved["hyperparameters"] = {**saved["hyperparameters"], "not_a_parameter": 1}
    with pytest.raises(ValueError, match="hyper-parameters differ"):
        case.make().load_state_dict(saved)
    other = "sum" if name != "sum" else "mean"
    with pytest.raises(ValueError, match="is for method"):
        CASES[other].make().load_state_dict(case.make().state_dict())
    with pytest.raises(ValueError, match="format 99"):
        case.make().load_state_dict({**case.make().state_dict(), "format": 99})


@pytest.mark.parametrize("name", DETERMINISTIC)
@given(data=st.data())
def test_row_permutation_equivariance(name: str, data: st.DataObject) -> None:
    case = CASES[name]
    G = data.draw(matrices(k=_k(case, data.draw(st.integers(2, 5)))))
    perm = data.draw(st.permutations(range(G.shape[0])))
    names = case.objectives(G.shape[0])
    losses = case.losses(G.shape[0]) if case.losses is not None else None
    # Two fresh instances: a stateful method must not see the first call's state.
    a = case.make()(G, objectives=names, signals=case.signals(names), losses=losses)
    permuted = [names[i] for i in perm]
    b = case.make()(
        G[list(perm)],
        objectives=permuted,
        signals=case.signals(names),
        losses=None if losses is None else [losses[i] for i in perm],
    )
    scale = G.abs().max().item() * G.shape[0] + 1e-12
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6 * scale)


@pytest.mark.parametrize("name", STOCHASTIC)
def test_row_permutation_equivariance_in_expectation(name: str) -> None:
    # A stochastic method's update depends on its draws; averaged over many seeds it must not
    # depend on the order of the rows.
    case = CASES[name]
    assert case.seeded is not None
    k = _k(case, 3)
    G = torch.tensor(
        [[1.0, 0.5, -0.2, 0.0], [-0.8, 0.6, 0.1, 0.3], [0.2, -0.9, 0.4, -0.5]],
        dtype=torch.float64,
    )[:k]
    perm = list(reversed(range(k)))
    names = case.objectives(k)
    losses = case.losses(k) if case.losses is not None else None
    draws = 400
    a = torch.stack(
        [
            case.seeded(s)(G, objectives=names, signals=case.signals(names), losses=losses)
            for s in range(draws)
        ]
    )
    b = torch.stack(
        [
            case.seeded(s + draws)(
                G[perm],
                objectives=[names[i] for i in perm],
                signals=case.signals(names),
                losses=None if losses is None else [losses[i] for i in perm],
            )
            for s in range(draws)
        ]
    )
    spread = torch.sqrt((a.var(0) + b.var(0)) / draws) + 1e-12
    assert bool(((a.mean(0) - b.mean(0)).abs() <= 5 * spread + 1e-9).all())
    # And the draws really vary: the method is stochastic, as its case declares.
    assert float(a.var(0).sum()) > 0 or float(b.var(0).sum()) > 0


@pytest.mark.parametrize("name", NAMES)
def test_nonfinite_rows_raise_or_skip(name: str) -> None:
    case = CASES[name]
    k = _k(case, 2)
    names = case.objectives(k)
    losses = case.losses(k) if case.losses is not None else None
    G = torch.ones(k, 3, dtype=torch.float64)
    G[-1, 1] = float("nan")
    method = case.make()
    kwargs = {"objectives": names, "signals": case.signals(names), "losses": losses}
    with pytest.raises(gs.NonFiniteGradientError, match=f"block 'block'.*{names[-1]}"):
        method(G, **kwargs)
    out = method(G, on_nonfinite="skip", **kwargs)
    assert method.last_report is not None and method.last_report.skipped
    assert "non-finite" in method.last_report.notes[0]
    torch.testing.assert_close(out, G.sum(0), equal_nan=True)


@pytest.mark.parametrize("name", NAMES)
def test_repr_shows_hyperparameters(name: str) -> None:
    method = CASES[name].make()
    text = repr(method)
    assert text.startswith(type(method).__name__ + "(")
    for key in method.hyperparameters():
        assert f"{key}=" in text


@pytest.mark.parametrize("name", NAMES)
def test_build_by_name_gives_the_default_method(name: str) -> None:
    built = gs.build(name)
    cls = type(CASES[name].make())
    assert type(built) is cls
    assert built.hyperparameters() == cls().hyperparameters()


@pytest.mark.parametrize("name", NAMES)
def test_hyperparameters_are_the_constructor_arguments_and_are_type_checked(name: str) -> None:
    cls = gs.registry.get(name)
    signature = inspect.signature(cls.__init__).parameters.values()
    keyword = {p.name: p.default for p in signature if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert set(cls().hyperparameters()) == set(keyword) - set(cls.not_hyperparameters)
    wrong = {bool: "false", int: 1.7, float: True, str: 3}
    for arg, default in keyword.items():
        if arg in cls.not_hyperparameters or type(default) not in wrong:
            continue
        with pytest.raises(TypeError, match=f"hyper-parameter {arg} must be"):
            gs.build({"method": name, arg: wrong[type(default)]})


@pytest.mark.parametrize("name", NAMES)
def test_declared_objective_counts_are_enforced(name: str) -> None:
    cls = gs.registry.get(name)
    case = CASES[name]
    assert cls.family in ("gramian", "cross_block", "loss", "elementwise")
    assert cls.kinds and cls.kinds <= {"multitask", "multimodal"}
    high = cls.max_objectives
    if high is not None:
        k = high + 1
        names = [f"x{i}" for i in range(k)]
        with pytest.raises(ValueError, match=f"takes .*objective.*got {k}"):
            case.make()(torch.ones(k, 2), objectives=names, losses=[1.0] * k)
    assert cls.min_objectives >= 1
    assert math.isfinite(float(cls.min_objectives))
