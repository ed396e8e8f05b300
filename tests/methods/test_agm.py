"""AGM: the spec's vectors (§6.2), the running means, the window and the state."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import gradsurgery as gs
from gradsurgery.methods.agm import AGM, agm_coefficients

ROWS = {"a": torch.tensor([[1.0, 2.0]]), "v": torch.tensor([[3.0, -1.0, 0.5]])}


def step(method: AGM, scores: dict[str, float], rows: dict[str, torch.Tensor] | None = None):
    rows = rows or {m: ROWS[m] for m in scores}
    table = gs.GradientTable.from_matrices(rows, ["mm"])
    return method.apply(table, {m: {"mm": s} for m, s in scores.items()})


def with_running(running: dict[str, float], t: int = 5) -> AGM:
    method = AGM()
    method.load_state_dict(
        {**method.state_dict(), "state": {"epoch": 0, "step": t, "running": running}}
    )
    return method


def test_spec_vector_two_modalities() -> None:
    out = agm_coefficients({"a": 0.5, "v": 1.0}, {"a": 0.6, "v": 0.9}, alpha=1.0)
    assert out["a"]["ratio"] == pytest.approx(1.6487, abs=1e-4)
    assert out["v"]["ratio"] == pytest.approx(0.6065, abs=1e-4)
    assert out["a"]["optimal_ratio"] == pytest.approx(1.3499, abs=1e-4)
    assert out["v"]["optimal_ratio"] == pytest.approx(0.7408, abs=1e-4)
    assert out["a"]["coeff"] == pytest.approx(0.7417, abs=1e-4)
    assert out["v"]["coeff"] == pytest.approx(1.1437, abs=1e-4)
    # The same through the method: the coefficient is the fused row's weight on each block.
    updates, report = step(with_running({"a": 0.6, "v": 0.9}), {"a": 0.5, "v": 1.0})
    torch.testing.assert_close(updates["a"], out["a"]["coeff"] * ROWS["a"][0])
    torch.testing.assert_close(updates["v"], out["v"]["coeff"] * ROWS["v"][0])
    assert report.blocks["a"].weights.item() == pytest.approx(0.7417, abs=1e-4)


def test_spec_vector_three_modalities() -> None:
    out = agm_coefficients(
        {"a": 0.5, "v": 1.0, "t": 0.8}, {"a": 0.6, "v": 0.9, "t": 0.7}, alpha=1.0
    )
    got = [out[m]["coeff"] for m in ("a", "v", "t")]
    assert got == pytest.approx([0.7631, 1.0769, 1.1052], abs=1e-4)


def test_running_means_are_cumulative_means_over_all_steps() -> None:
    method = AGM()
    history = [{"a": 0.9, "v": 0.3}, {"a": 0.5, "v": 0.7}, {"a": 0.2, "v": 1.1}]
    for t, scores in enumerate(history, start=1):
        _, report = step(method, scores)
        # Coefficients use the means *before* this step's update (0 at the start).
        before = {m: sum(h[m] for h in history[: t - 1]) / max(t - 1, 1) for m in scores}
        if t == 1:
            before = {"a": 0.0, "v": 0.0}
        want = agm_coefficients(scores, before, alpha=1.0)
        assert report.blocks["a"].details["coeff"] == pytest.approx(want["a"]["coeff"])
        assert report.blocks["a"].details["running_score"] == pytest.approx(before["a"])
        assert report.blocks["a"].details["step"] == t
    assert method.running == pytest.approx({"a": 1.6 / 3, "v": 2.1 / 3})


def test_first_step_damps_the_more_confident_modality() -> None:
    # S = 0: opt = 1 for all, so coeff = exp(α(1 − ratio)): below 1 for the lower score.
    _, report = step(AGM(alpha=2.0), {"a": 0.2, "v": 1.4})
    ratio = math.exp(2 * (0.8 - 0.2))
    assert report.blocks["a"].details["coeff"] == pytest.approx(math.exp(2.0 * (1 - ratio)))
    assert report.blocks["a"].weights.item() < 1 < report.blocks["v"].weights.item()


@given(
    scores=st.lists(st.floats(0.0, 5.0), min_size=2, max_size=4),
    common=st.floats(0.0, 5.0),
    alpha=st.floats(0.0, 3.0),
)
def test_with_equal_history_the_more_confident_modality_gets_the_smaller_coefficient(
    scores: list[float], common: float, alpha: float
) -> None:
    # The defining property: with equal running means, coefficients order as the scores
    # (lower cross-entropy = more dominant now = smaller coefficient), and a modality at the
    # mean score gets exactly 1; the clamp bounds every coefficient by exp(α·clamp).
    names = [f"m{i}" for i in range(len(scores))]
    s = dict(zip(names, scores))
    out = agm_coefficients(s, dict.fromkeys(names, common), alpha=alpha, clamp=10.0)
    for i in names:
        assert 0 < out[i]["coeff"] <= math.exp(alpha * 10.0) * (1 + 1e-12)
        for j in names:
            if s[i] < s[j]:
                assert out[i]["coeff"] <= out[j]["coeff"]
    mean = sum(scores) / len(scores)
    for m in names:
        if s[m] == mean:
            assert out[m]["coeff"] == pytest.approx(1.0)


def test_clamp() -> None:
    # opt − ratio = e^{2·2} − e^{−2·2} ≈ 54.6 > 10: the exponent is clamped at α·10.
    out = agm_coefficients({"a": 3.0, "v": 3.0}, {"a": 0.0, "v": 4.0}, alpha=0.1, clamp=10.0)
    assert out["a"]["coeff"] == pytest.approx(math.exp(0.1 * 10.0))


def test_window_leaves_the_gradient_but_the_means_advance() -> None:
    method = AGM(start_epoch=2, end_epoch=3)
    updates, report = step(method, {"a": 0.1, "v": 2.0})
    torch.testing.assert_close(updates["a"], ROWS["a"][0])
    assert report.blocks["a"].details["active"] is False
    assert report.blocks["a"].details["coeff"] < 1  # computed, not applied
    assert method.running == pytest.approx({"a": 0.1, "v": 2.0})
    method.set_epoch(2)
    _, report = step(method, {"a": 0.1, "v": 2.0})
    assert report.blocks["a"].details["active"] is True
    method.set_epoch(4)
    assert not method.active


def test_one_block_is_left_alone_and_still_counts() -> None:
    method = AGM()
    out = method(torch.tensor([[1.0, -2.0]]), objectives=["mm"], signals={"block": {"mm": 0.4}})
    torch.testing.assert_close(out, torch.tensor([1.0, -2.0]))
    assert method.step == 1 and method.running == {"block": 0.4}


def test_state_round_trip_continues_identically() -> None:
    first = AGM(alpha=1.5)
    second = AGM(alpha=1.5)
    gen = torch.Generator().manual_seed(0)
    sequence = [{"a": float(x), "v": float(y)} for x, y in torch.rand(6, 2, generator=gen)]
    for scores in sequence[:3]:
        step(first, scores)
    first.set_epoch(1)
    second.load_state_dict(first.state_dict())
    assert second.epoch == 1
    for scores in sequence[3:]:
        a, _ = step(first, scores)
        b, _ = step(second, scores)
        for m in a:
            torch.testing.assert_close(a[m], b[m], rtol=0, atol=0)


def test_errors() -> None:
    method = AGM()
    step(method, {"a": 0.5, "v": 0.5})
    with pytest.raises(ValueError, match="running scores for blocks"):
        step(method, {"a": 0.5, "t": 0.5}, {"a": ROWS["a"], "t": ROWS["v"]})
    with pytest.raises(gs.SignalError, match="outside"):
        step(AGM(), {"a": -0.1, "v": 0.5})
    with pytest.raises(gs.SignalError, match="missing"):
        AGM().apply(gs.GradientTable.from_matrices(ROWS, ["mm"]), {"a": {"mm": 0.5}})
    with pytest.raises(ValueError, match="end_epoch"):
        AGM(start_epoch=3, end_epoch=2)
