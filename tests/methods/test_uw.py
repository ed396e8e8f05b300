"""Uncertainty weighting: the spec's vector, the learning of s, its fixed point, state."""

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

from gradsurgery.methods.uw import UW

ROWS = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]], dtype=torch.float64)


def with_log_variances(method: UW, names: list[str], s: list[float]) -> UW:
    saved = method.state_dict()
    saved["state"] = {
        "s": {"names": names, "value": torch.tensor(s, dtype=torch.float64), "moments": {}}
    }
    method.load_state_dict(saved)
    return method


def test_spec_vector() -> None:
    # Spec §5.1: s = (0, log 2) → paper weights ½e^{−s} = (0.5, 0.25), library e^{−s} = (1, 0.5);
    # with L = (2, 1): ∂/∂s = ½(1 − e^{−s}L) = (−0.5, 0.25).
    method = with_log_variances(UW(optimizer="sgd", lr=0.1), ["a", "b"], [0.0, math.log(2)])
    out = method(ROWS, objectives=["a", "b"], losses=[2.0, 1.0])
    torch.testing.assert_close(
        report_weights(method), torch.tensor([1.0, 0.5], dtype=torch.float64)
    )
    torch.testing.assert_close(out, ROWS[0] + 0.5 * ROWS[1])
    details = method.last_report.blocks["block"].details  # type: ignore[union-attr]
    assert details["grad"] == pytest.approx([-0.5, 0.25], abs=1e-12)
    assert details["log_variance"] == pytest.approx([0.0, math.log(2)], abs=1e-15)
    # One SGD step of lr 0.1: s ← s − 0.1·grad.
    assert method.log_variances == pytest.approx({"a": 0.05, "b": math.log(2) - 0.025}, abs=1e-12)


def test_sgd_trajectory_by_hand() -> None:
    # s_{t+1} = s_t − lr·½(1 − e^{−s_t} L_t), weights e^{−s_t}; three steps, computed here.
    lr = 0.3
    losses = [[2.0, 0.5], [1.5, 0.4], [1.0, 0.8]]
    method = UW(optimizer="sgd", lr=lr)
    s = [0.0, 0.0]
    for values in losses:
        method(ROWS, objectives=["a", "b"], losses=values)
        expected = [math.exp(-x) for x in s]
        assert report_weights(method).tolist() == pytest.approx(expected, rel=1e-12)
        s = [x - lr * 0.5 * (1 - math.exp(-x) * v) for x, v in zip(s, values)]
    assert list(method.log_variances.values()) == pytest.approx(s, rel=1e-12)


def test_first_adam_step_moves_each_s_by_lr() -> None:
    # Adam's first step is −lr·g/(|g| + 1e-8): each s moves by lr against its gradient.
    method = UW(lr=0.01)
    method(ROWS, objectives=["a", "b"], losses=[3.0, 0.5])
    grad = [0.5 * (1 - 3.0), 0.5 * (1 - 0.5)]
    expected = [-0.01 * g / (abs(g) + 1e-8) for g in grad]
    assert list(method.log_variances.values()) == pytest.approx(expected, rel=1e-12)


@settings(max_examples=20)
@given(losses=st.lists(st.floats(0.1, 10.0), min_size=1, max_size=4))
def test_weights_converge_to_inverse_losses(losses: list[float]) -> None:
    # The defining fixed point: e^{s_i} = L_i, so w_i = e^{−s_i} → 1/L_i.
    k = len(losses)
    method = UW(optimizer="sgd", lr=0.5)
    G = torch.eye(k, dtype=torch.float64)
    for _ in range(200):
        method(G, losses=losses)
    out = method(G, losses=losses)
    torch.testing.assert_close(out, torch.tensor([1 / v for v in losses], dtype=torch.float64))


def test_zero_loss_is_floored_and_negative_loss_raises() -> None:
    method = UW(optimizer="sgd", lr=1.0, eps=1e-4)
    method(ROWS, losses=[0.0, 1.0])
    # grad_0 = ½(1 − 1e-4), so s_0 = −½(1 − 1e-4).
    assert method.log_variances["0"] == pytest.approx(-0.5 * (1 - 1e-4), rel=1e-12)
    with pytest.raises(ValueError, match="non-negative"):
        UW()(ROWS, losses=[-1.0, 1.0])
    with pytest.raises(ValueError, match="loss values"):
        UW()(ROWS)


def test_init_and_frozen_learning() -> None:
    method = UW(init=-0.5, lr=0.0)
    for _ in range(3):
        method(ROWS, losses=[2.0, 1.0])
        torch.testing.assert_close(
            report_weights(method), torch.full((2,), math.exp(0.5), dtype=torch.float64)
        )


def test_state_follows_objective_names_and_resumes() -> None:
    outs = check_permutation_over_trajectory(lambda: UW(lr=0.05))
    assert not torch.allclose(outs[-1], outs[0])
    check_resume_over_trajectory(lambda: UW(lr=0.05))
    check_resume_over_trajectory(lambda: UW(optimizer="sgd", lr=0.2))


def test_other_objectives_need_a_reset() -> None:
    method = UW()
    method(ROWS, objectives=["a", "b"], losses=[1.0, 2.0])
    with pytest.raises(ValueError, match="reset"):
        method(ROWS, objectives=["a", "c"], losses=[1.0, 2.0])
    method.reset()
    method(ROWS, objectives=["a", "c"], losses=[1.0, 2.0])


def test_s_follows_torch_adam_on_the_papers_loss() -> None:
    # The reference setting: s is a parameter of the paper's loss Σ ½e^{−s}L + ½s, stepped by
    # torch.optim.Adam with the same learning rate. UW reproduces that trajectory.
    losses = [[2.0, 0.5, 1.0], [1.5, 0.6, 0.9], [1.2, 0.4, 1.1], [0.9, 0.5, 0.7], [0.8, 0.3, 0.6]]
    s = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    adam = torch.optim.Adam([s], lr=0.05)
    method = UW(lr=0.05)
    for values in losses:
        L = torch.tensor(values, dtype=torch.float64)
        method(torch.eye(3, dtype=torch.float64), losses=values)
        torch.testing.assert_close(report_weights(method), torch.exp(-s.detach()))
        adam.zero_grad()
        (0.5 * torch.exp(-s) * L + 0.5 * s).sum().backward()
        adam.step()
    torch.testing.assert_close(
        torch.tensor(list(method.log_variances.values()), dtype=torch.float64), s.detach()
    )
