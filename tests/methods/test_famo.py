"""FAMO: the spec's vector, both ways of seeing the "after" losses, a trajectory, state."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from loss_steps import (
    check_permutation_over_trajectory,
    check_resume_over_trajectory,
    report_weights,
)

from gradsurgery.methods.famo import FAMO

G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
DELTA = [math.log(2 / 1.8), math.log(0.5 / 0.49)]


def test_spec_vector_with_update_after() -> None:
    # Spec §5.4: ξ = 0, L = (2, 0.5): paper w = (0.2, 0.8), library (0.4, 1.6); with
    # L' = (1.8, 0.49): δ = (0.1054, 0.0202), ξ-gradient (0.0213, −0.0213).
    method = FAMO()
    out = method(G, objectives=["a", "b"], losses=[2.0, 0.5])
    torch.testing.assert_close(
        report_weights(method), torch.tensor([0.4, 1.6], dtype=torch.float64)
    )
    torch.testing.assert_close(out, 0.4 * G[0] + 1.6 * G[1])
    info = method.update_after({"b": 0.49, "a": 1.8})
    assert info["delta"] == pytest.approx([0.1054, 0.0202], abs=1e-4)
    assert info["delta"] == pytest.approx(DELTA, rel=1e-7)
    assert info["logit_grad"] == pytest.approx([0.0213, -0.0213], abs=1e-4)
    g = 0.5 * (DELTA[0] - DELTA[1]) / 2
    assert info["logit_grad"] == pytest.approx([g, -g], rel=1e-6)
    # One Adam step from 0: ξ = −lr·g/(|g| + 1e-8), no clipping (‖g‖ < 1), no decay at ξ = 0.
    step = 0.025 * g / (g + 1e-8)
    assert list(method.logits.values()) == pytest.approx([-step, step], rel=1e-12)
    # Nothing is waiting any more: the next call does not learn again.
    method(G, objectives=["a", "b"], losses=[1.8, 0.49])
    details = method.last_report.blocks["block"].details  # type: ignore[union-attr]
    assert "delta" not in details
    with pytest.raises(RuntimeError, match="no step is waiting"):
        FAMO().update_after([1.0, 1.0])


def test_next_call_sees_the_after_losses() -> None:
    # Default: the next call's losses are the "after" losses of the previous step.
    method = FAMO()
    method(G, losses=[2.0, 0.5])
    method(G, losses=[1.8, 0.49])
    details = method.last_report.blocks["block"].details  # type: ignore[union-attr]
    assert details["delta"] == pytest.approx(DELTA, rel=1e-7)
    g = 0.5 * (DELTA[0] - DELTA[1]) / 2
    step = 0.025 * g / (g + 1e-8)
    assert details["logits"] == pytest.approx([-step, step], rel=1e-12)
    # The weights of this call use the learned ξ: k·(z/D)/Σ(z/D).
    z = torch.softmax(torch.tensor([-step, step], dtype=torch.float64), 0)
    q = z / torch.tensor([1.8 + 1e-8, 0.49 + 1e-8], dtype=torch.float64)
    torch.testing.assert_close(report_weights(method), 2 * q / q.sum())


def _reference_trajectory(
    losses: list[list[float]], lr: float, decay: float, max_norm: float
) -> list[list[float]]:
    """FAMO's weights step by step, written out with plain floats (next-call mode)."""
    k = len(losses[0])
    xi, m, v = [0.0] * k, [0.0] * k, [0.0] * k
    out = []
    for t, values in enumerate(losses):
        if t > 0:
            z = [math.exp(x) / sum(math.exp(y) for y in xi) for x in xi]
            delta = [math.log(a + 1e-8) - math.log(b + 1e-8) for a, b in zip(losses[t - 1], values)]
            mean = sum(zi * di for zi, di in zip(z, delta))
            grad = [zi * (di - mean) for zi, di in zip(z, delta)]
            norm = math.sqrt(sum(gi * gi for gi in grad))
            grad = [gi * min(1.0, max_norm / (norm + 1e-6)) for gi in grad]
            grad = [gi + decay * x for gi, x in zip(grad, xi)]
            m = [0.9 * a + 0.1 * gi for a, gi in zip(m, grad)]
            v = [0.999 * a + 0.001 * gi * gi for a, gi in zip(v, grad)]
            c1, c2 = 1 - 0.9**t, 1 - 0.999**t
            xi = [
                x - lr / c1 * a / (math.sqrt(b) / math.sqrt(c2) + 1e-8) for x, a, b in zip(xi, m, v)
            ]
        z = [math.exp(x) / sum(math.exp(y) for y in xi) for x in xi]
        q = [zi / (li + 1e-8) for zi, li in zip(z, values)]
        out.append([k * qi / sum(q) for qi in q])
    return out


@pytest.mark.parametrize("max_norm", [1.0, 0.01])
def test_multi_step_trajectory(max_norm: float) -> None:
    losses = [
        [2.0, 0.5, 1.0],
        [1.8, 0.49, 0.7],
        [1.7, 0.3, 0.69],
        [1.2, 0.29, 0.5],
        [1.1, 0.2, 0.4],
    ]
    method = FAMO(lr=0.1, weight_decay=1e-3, max_norm=max_norm)
    expected = _reference_trajectory(losses, 0.1, 1e-3, max_norm)
    for values, weights in zip(losses, expected):
        method(torch.eye(3, dtype=torch.float64), losses=values)
        assert report_weights(method).tolist() == pytest.approx(weights, rel=1e-10)


@given(
    delta=st.lists(st.floats(-1.0, 1.0), min_size=2, max_size=5),
    losses=st.lists(st.floats(0.1, 10.0), min_size=5, max_size=5),
)
def test_the_objective_that_improved_least_gains_weight(
    delta: list[float], losses: list[float]
) -> None:
    # Defining property: after one update, z rises for the objective whose log-loss fell
    # least and falls for the one that fell most (towards equal rates of improvement).
    k = len(delta)
    before = losses[:k]
    after = [b * math.exp(-d) for b, d in zip(before, delta)]
    assume(max(delta) - min(delta) > 1e-3)
    method = FAMO(max_norm=None)
    method(torch.eye(k, dtype=torch.float64), losses=before)
    method.update_after(after)
    xi = list(method.logits.values())
    slowest = min(range(k), key=lambda i: delta[i])
    fastest = max(range(k), key=lambda i: delta[i])
    assert xi[slowest] > 0 > xi[fastest]


def test_weights_sum_to_k_and_errors() -> None:
    method = FAMO()
    method(torch.eye(3, dtype=torch.float64), losses=[0.3, 2.0, 5.0])
    assert float(report_weights(method).sum()) == pytest.approx(3.0)
    with pytest.raises(KeyError, match="no loss"):
        method.update_after({"0": 1.0})
    with pytest.raises(ValueError, match="expected 3 losses"):
        method.update_after([1.0, 1.0])
    with pytest.raises(ValueError, match="non-negative"):
        method.update_after(torch.tensor([1.0, -1.0, 1.0]))
    method.update_after(torch.tensor([0.3, 2.0, 5.0], requires_grad=True))


def test_state_follows_objective_names_and_resumes() -> None:
    outs = check_permutation_over_trajectory(FAMO)
    assert not torch.allclose(outs[-1], outs[0])
    check_resume_over_trajectory(FAMO)
    check_resume_over_trajectory(lambda: FAMO(lr=0.1, max_norm=None))


def test_logits_follow_torch_adam_with_clipping_and_decay() -> None:
    # The official procedure with torch pieces: the softmax's vector-Jacobian product by
    # autograd, clip_grad_norm_, then torch.optim.Adam with weight decay; losses recomputed
    # after each step are passed to update_after.
    before = [[2.0, 0.5, 1.0], [1.7, 0.45, 0.8], [1.2, 0.44, 0.79], [1.1, 0.2, 0.5]]
    after = [[1.7, 0.45, 0.8], [1.2, 0.44, 0.79], [1.1, 0.2, 0.5], [1.0, 0.1, 0.45]]
    xi = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    adam = torch.optim.Adam([xi], lr=0.1, weight_decay=1e-2)
    method = FAMO(lr=0.1, weight_decay=1e-2, max_norm=0.02)
    for b, a in zip(before, after):
        method(torch.eye(3, dtype=torch.float64), losses=b)
        delta = torch.log(torch.tensor(b, dtype=torch.float64) + 1e-8) - torch.log(
            torch.tensor(a, dtype=torch.float64) + 1e-8
        )
        adam.zero_grad()
        (xi.grad,) = torch.autograd.grad(torch.softmax(xi, 0), xi, grad_outputs=delta)
        torch.nn.utils.clip_grad_norm_([xi], 0.02)
        adam.step()
        method.update_after(a)
        torch.testing.assert_close(
            torch.tensor(list(method.logits.values()), dtype=torch.float64), xi.detach()
        )
