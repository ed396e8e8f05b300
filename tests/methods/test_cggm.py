"""CGGM: the spec's vector (§6.4), the guard against noisy deltas and the state."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import gradsurgery as gs
from gradsurgery.methods.cggm import CGGM, cggm_coefficients

ROWS = {"a": torch.tensor([[1.0, 2.0]]), "v": torch.tensor([[3.0, -1.0, 0.5]])}


def step(method: CGGM, metrics: dict[str, float]):
    table = gs.GradientTable.from_matrices(ROWS, ["cls"])
    return method.apply(table, {m: {"cls": v} for m, v in metrics.items()})


def test_spec_vector() -> None:
    method = CGGM()
    step(method, {"a": 0.5, "v": 0.4})  # acc(t−1)
    updates, report = step(method, {"a": 0.6, "v": 0.45})
    a, v = report.blocks["a"].details, report.blocks["v"].details
    assert (a["delta"], v["delta"]) == pytest.approx((0.1, 0.05))
    assert (a["B"], v["B"]) == pytest.approx((0.3333, 0.6667), abs=1e-4)
    assert report.blocks["a"].weights.item() == pytest.approx(0.4333, abs=1e-4)
    assert report.blocks["v"].weights.item() == pytest.approx(0.8667, abs=1e-4)
    torch.testing.assert_close(updates["v"], report.blocks["v"].weights.item() * ROWS["v"][0])


def test_first_step_starts_from_zero() -> None:
    _, report = step(CGGM(), {"a": 0.5, "v": 0.4})
    assert report.blocks["a"].details["previous"] == 0.0
    assert report.blocks["a"].details["B"] == pytest.approx(0.4 / 0.9)


def test_official_rule_without_guard_and_the_default_guard() -> None:
    # Δ = (0.1, −0.05): B = (−0.05/0.05, 0.1/0.05) = (−1, 2): ascent on a, unguarded.
    deltas = {"a": 0.1, "v": -0.05}
    raw, skipped = cggm_coefficients(deltas, b_max=None, tau=0.0)
    assert raw == pytest.approx({"a": -1.0, "v": 2.0}, rel=1e-6) and not skipped
    clamped, _ = cggm_coefficients(deltas)
    assert clamped == pytest.approx({"a": 0.0, "v": 1.0}, rel=1e-6)
    # Σ Δ = 0: official B = (1e-8 − Δ_m)/1e-8 explodes; the guard skips the step.
    zero = {"a": 0.1, "v": -0.1}
    raw, _ = cggm_coefficients(zero, b_max=None, tau=0.0)
    assert abs(raw["a"]) > 1e6
    assert cggm_coefficients(zero) == ({"a": 1.0, "v": 1.0}, True)


def test_skipped_step_leaves_the_gradient() -> None:
    method = CGGM()
    step(method, {"a": 0.5, "v": 0.5})
    updates, report = step(method, {"a": 0.5, "v": 0.5})  # Δ = 0
    assert report.blocks["a"].details["skipped"] is True
    torch.testing.assert_close(updates["a"], ROWS["a"][0])


@given(deltas=st.lists(st.floats(1e-3, 1.0), min_size=2, max_size=5), rho=st.floats(0.1, 2.0))
def test_the_modality_that_improved_least_is_pushed_most(deltas: list[float], rho: float) -> None:
    # The defining property, with every Δ > 0: B ∈ [0, 1], Σ_m B_m = M − 1 (so the clamp is
    # inactive), and B orders opposite to Δ.
    names = [f"m{i}" for i in range(len(deltas))]
    d = dict(zip(names, deltas))
    b, skipped = cggm_coefficients(d, eps=0.0)
    assert not skipped
    assert sum(b.values()) == pytest.approx(len(names) - 1)
    for i in names:
        assert 0.0 <= b[i] <= 1.0
        for j in names:
            if d[i] < d[j]:
                assert b[i] >= b[j]
    rows = {m: torch.tensor([[1.0, -1.0]]) for m in names}
    method = CGGM(rho=rho, eps=0.0)
    table = gs.GradientTable.from_matrices(rows, ["cls"])
    _, report = method.apply(table, {m: {"cls": d[m]} for m in names})  # previous = 0
    for m in names:
        assert report.blocks[m].weights.item() == pytest.approx(rho * b[m], rel=1e-6)


def test_one_block_is_left_alone() -> None:
    method = CGGM()
    out = method(torch.tensor([[2.0, -1.0]]), objectives=["cls"], signals={"block": {"cls": 0.7}})
    torch.testing.assert_close(out, torch.tensor([2.0, -1.0]))
    assert method.previous == {"block": 0.7}


def test_state_round_trip_and_errors() -> None:
    first = CGGM()
    step(first, {"a": 0.5, "v": 0.4})
    second = CGGM()
    second.load_state_dict(first.state_dict())
    a, _ = step(first, {"a": 0.6, "v": 0.45})
    b, _ = step(second, {"a": 0.6, "v": 0.45})
    torch.testing.assert_close(a["a"], b["a"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="previous metrics for blocks"):
        first.apply(gs.GradientTable.from_matrices({"x": ROWS["a"]}, ["cls"]), {"x": {"cls": 1}})
    first.reset()
    assert first.previous == {} and first.step == 0
    with pytest.raises(ValueError, match="b_max must be >= 0"):
        CGGM(b_max=-1.0)
