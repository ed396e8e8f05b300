"""IMTL-L: the spec's vector, the learning of s, its fixed point, state."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from loss_steps import (
    check_permutation_over_trajectory,
    check_resume_over_trajectory,
    report_weights,
)

from gradsurgery.methods.imtll import IMTLL

ROWS = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]], dtype=torch.float64)


def with_scales(method: IMTLL, names: list[str], s: list[float]) -> IMTLL:
    saved = method.state_dict()
    saved["state"] = {
        "s": {"names": names, "value": torch.tensor(s, dtype=torch.float64), "moments": {}}
    }
    method.load_state_dict(saved)
    return method


def test_spec_vector() -> None:
    # Spec §5.5: s = (0, log 0.5), L = (2, 1): w = e^s = (1, 0.5), ∂/∂s = e^s L − 1 = (1, −0.5).
    method = with_scales(IMTLL(optimizer="sgd", lr=0.1), ["a", "b"], [0.0, math.log(0.5)])
    out = method(ROWS, objectives=["a", "b"], losses=[2.0, 1.0])
    expected = torch.tensor([1.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close(report_weights(method), expected)
    torch.testing.assert_close(out, ROWS[0] + 0.5 * ROWS[1])
    details = method.last_report.blocks["block"].details  # type: ignore[union-attr]
    assert details["grad"] == pytest.approx([1.0, -0.5], abs=1e-12)
    # One SGD step of lr 0.1.
    assert method.scales == pytest.approx({"a": -0.1, "b": math.log(0.5) + 0.05}, abs=1e-12)


def test_sgd_trajectory_by_hand() -> None:
    lr = 0.2
    losses = [[2.0, 0.5], [1.5, 0.4], [1.0, 0.8]]
    method = IMTLL(optimizer="sgd", lr=lr)
    s = [0.0, 0.0]
    for values in losses:
        method(ROWS, objectives=["a", "b"], losses=values)
        assert report_weights(method).tolist() == pytest.approx([math.exp(x) for x in s], rel=1e-12)
        s = [x - lr * (math.exp(x) * v - 1) for x, v in zip(s, values)]
    assert list(method.scales.values()) == pytest.approx(s, rel=1e-12)


@settings(max_examples=20)
@given(losses=st.lists(st.floats(0.1, 10.0), min_size=1, max_size=4))
def test_scaled_losses_converge_to_one(losses: list[float]) -> None:
    # The defining fixed point: e^{s_i} L_i = 1, so w_i → 1/L_i.
    k = len(losses)
    method = IMTLL(optimizer="sgd", lr=0.05)
    G = torch.eye(k, dtype=torch.float64)
    for _ in range(600):
        method(G, losses=losses)
    out = method(G, losses=losses)
    torch.testing.assert_close(out, torch.tensor([1 / v for v in losses], dtype=torch.float64))


def test_zero_loss_is_floored() -> None:
    method = IMTLL(optimizer="sgd", lr=1.0, eps=1e-4)
    method(ROWS, losses=[0.0, 1.0])
    assert method.scales["0"] == pytest.approx(1 - 1e-4, rel=1e-12)
    with pytest.raises(ValueError, match="non-negative"):
        IMTLL()(ROWS, losses=[1.0, float("nan")])


def test_state_follows_objective_names_and_resumes() -> None:
    outs = check_permutation_over_trajectory(lambda: IMTLL(lr=0.05))
    assert not torch.allclose(outs[-1], outs[0])
    check_resume_over_trajectory(lambda: IMTLL(lr=0.05))
    check_resume_over_trajectory(lambda: IMTLL(optimizer="sgd", lr=0.1))


def test_s_follows_torch_adam_on_the_scaled_loss() -> None:
    # The reference setting: s is a parameter of Σ e^{s}L − s, stepped by torch.optim.Adam.
    losses = [[2.0, 0.5, 1.0], [1.5, 0.6, 0.9], [1.2, 0.4, 1.1], [0.9, 0.5, 0.7], [0.8, 0.3, 0.6]]
    s = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    adam = torch.optim.Adam([s], lr=0.05)
    method = IMTLL(lr=0.05)
    for values in losses:
        L = torch.tensor(values, dtype=torch.float64)
        method(torch.eye(3, dtype=torch.float64), losses=values)
        torch.testing.assert_close(report_weights(method), torch.exp(s.detach()))
        adam.zero_grad()
        (torch.exp(s) * L - s).sum().backward()
        adam.step()
    torch.testing.assert_close(
        torch.tensor(list(method.scales.values()), dtype=torch.float64), s.detach()
    )
