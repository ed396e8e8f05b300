"""Property families that every registered method must satisfy.

A method joins the suite by being added to ``helpers.CASES``; the first test fails when a
registered method has no case.
"""

from __future__ import annotations

import pytest
import torch
from helpers import CASES, matrices, run
from hypothesis import given
from hypothesis import strategies as st

import gradsurgery as gs

NAMES = sorted(CASES)


def test_every_registered_method_is_in_the_suite() -> None:
    assert set(gs.available()) == set(CASES)


def _k(case, draw_k: int) -> int:
    return draw_k if case.ks is None else case.ks[draw_k % len(case.ks)]


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_scale_convention_on_identical_rows(name: str, data: st.DataObject) -> None:
    case = CASES[name]
    k = _k(case, data.draw(st.integers(1, 6)))
    g = data.draw(matrices(k=1))[0]
    out = run(case, g.expand(k, -1).clone())
    torch.testing.assert_close(out, case.scale(k) * g, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data(), c=st.floats(0.01, 100.0))
def test_positive_homogeneity(name: str, data: st.DataObject, c: float) -> None:
    case = CASES[name]
    G = data.draw(matrices(k=_k(case, data.draw(st.integers(1, 5)))))
    a = run(case, G)
    b = run(case, c * G)
    tol = 1e-6 * (G.abs().max().item() * G.shape[0] + 1e-12) * c
    torch.testing.assert_close(b, c * a, rtol=1e-6, atol=tol)


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
    torch.testing.assert_close(out.cpu(), run(case, G), rtol=1e-2, atol=1e-2)
    assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_report_weights_reproduce_the_update(name: str, data: st.DataObject) -> None:
    case = CASES[name]
    G = data.draw(matrices(k=_k(case, data.draw(st.integers(1, 5)))))
    method = case.make()
    out = run(case, G, method)
    report = method.last_report
    assert report is not None and not report.skipped
    weights = report.blocks["block"].weights
    torch.testing.assert_close(out, weights @ G, rtol=1e-9, atol=1e-9)
    assert report.blocks["block"].changed == (not bool((weights == 1).all()))


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
    second = case.make()
    second.load_state_dict(saved)
    for G in inputs[3:]:
        torch.testing.assert_close(run(case, G, first), run(case, G, second), rtol=0, atol=0)
    fresh = case.make()
    first.reset()
    for G in inputs:
        torch.testing.assert_close(run(case, G, first), run(case, G, fresh), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_load_state_dict_rejects_other_hyperparameters(name: str) -> None:
    case = CASES[name]
    saved = case.make().state_dict()
    saved["hyperparameters"] = {**saved["hyperparameters"], "not_a_parameter": 1}
    with pytest.raises(ValueError, match="hyper-parameters differ"):
        case.make().load_state_dict(saved)
    other = "sum" if name != "sum" else "mean"
    with pytest.raises(ValueError, match="is for method"):
        CASES[other].make().load_state_dict(case.make().state_dict())


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_row_permutation_equivariance(name: str, data: st.DataObject) -> None:
    case = CASES[name]
    if not case.deterministic:
        return
    G = data.draw(matrices(k=_k(case, data.draw(st.integers(2, 5)))))
    perm = data.draw(st.permutations(range(G.shape[0])))
    names = case.objectives(G.shape[0])
    method = case.make()
    a = method(G, objectives=names, signals=case.signals(names))
    permuted = [names[i] for i in perm]
    b = method(G[list(perm)], objectives=permuted, signals=case.signals(names))
    scale = G.abs().max().item() * G.shape[0] + 1e-12
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6 * scale)


@pytest.mark.parametrize("name", NAMES)
def test_nonfinite_rows_raise_or_skip(name: str) -> None:
    case = CASES[name]
    k = _k(case, 2)
    names = case.objectives(k)
    G = torch.ones(k, 3, dtype=torch.float64)
    G[-1, 1] = float("nan")
    method = case.make()
    with pytest.raises(gs.NonFiniteGradientError, match=f"block 'block'.*{names[-1]}"):
        method(G, objectives=names, signals=case.signals(names))
    out = method(G, objectives=names, signals=case.signals(names), on_nonfinite="skip")
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
