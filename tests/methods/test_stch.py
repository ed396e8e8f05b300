"""STCH: the spec's vector through a real warm-up, the smooth Tchebycheff gradient, state."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from loss_steps import (
    check_permutation_over_trajectory,
    check_resume_over_trajectory,
    report_weights,
)

from gradsurgery.methods.stch import STCH, stch_weights

G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)


def test_spec_vector_after_a_real_warmup() -> None:
    # Spec §5.8: L = (2, 0.5), n = (4, 0.5), μ = 1: ℓ = (−0.6931, 0), softmax (1/3, 2/3),
    # w = 2·softmax/L = (0.3333, 2.6667).
    method = STCH(warmup_epochs=2)
    method.set_epoch(0)
    method(G, losses=[9.0, 9.0])  # not the last warm-up epoch: not averaged
    torch.testing.assert_close(
        report_weights(method), torch.tensor([1 / 9, 1 / 9], dtype=torch.float64)
    )
    method.set_epoch(1)
    for values in ([3.0, 0.4], [5.0, 0.6]):  # last warm-up epoch: nadir (4, 0.5)
        method(G, losses=values)
        torch.testing.assert_close(
            report_weights(method), 1 / torch.tensor(values, dtype=torch.float64)
        )
        assert method.nadir is None
    method.set_epoch(2)
    out = method(G, losses=[2.0, 0.5])
    assert method.nadir == pytest.approx({"0": 4.0, "1": 0.5})
    assert report_weights(method).tolist() == pytest.approx([1 / 3, 8 / 3], rel=1e-12)
    torch.testing.assert_close(out, (1 / 3) * G[0] + (8 / 3) * G[1])
    details = method.last_report.blocks["block"].details  # type: ignore[union-attr]
    assert details["phase"] == "stch" and details["nadir"] == pytest.approx([4.0, 0.5])


def test_normalize_sum() -> None:
    method = STCH(warmup_epochs=1, epoch_length=2, normalize="sum")
    method(G, losses=[3.0, 0.4])
    # Warm-up weights 1/L rescaled to Σ w = 2.
    assert report_weights(method).tolist() == pytest.approx([2 * 0.4 / 3.4, 2 * 3 / 3.4])
    method(G, losses=[5.0, 0.6])
    method(G, losses=[2.0, 0.5])
    # (1/3, 8/3) rescaled to sum 2.
    assert report_weights(method).tolist() == pytest.approx([2 / 9, 16 / 9], rel=1e-12)


def test_without_warmup_the_first_losses_are_the_nadir() -> None:
    method = STCH(warmup_epochs=0)
    method(G, losses=[2.0, 0.5])
    assert method.nadir == pytest.approx({"0": 2.0, "1": 0.5})
    # ℓ = 0: uniform softmax, w = 1/L.
    assert report_weights(method).tolist() == pytest.approx([0.5, 2.0], rel=1e-12)


@given(
    losses=st.lists(st.floats(0.01, 100.0), min_size=1, max_size=5),
    nadir=st.lists(st.floats(0.01, 100.0), min_size=5, max_size=5),
    mu=st.floats(0.05, 10.0),
)
def test_weights_are_the_gradient_of_the_scalarisation(
    losses: list[float], nadir: list[float], mu: float
) -> None:
    # Defining equation: w = ∇_L k·μ·logsumexp(log(L/n + 1e-20)/μ).
    k = len(losses)
    L = torch.tensor(losses, dtype=torch.float64, requires_grad=True)
    n = torch.tensor(nadir[:k], dtype=torch.float64)
    (k * mu * torch.logsumexp(torch.log(L / n + 1e-20) / mu, 0)).backward()
    assert L.grad is not None
    torch.testing.assert_close(stch_weights(L.detach(), n, mu), L.grad, rtol=1e-9, atol=0)


def test_small_mu_approaches_tchebycheff() -> None:
    # μ → 0: all weight on the objective with the largest normalised log-loss.
    w = stch_weights(
        torch.tensor([2.0, 0.5], dtype=torch.float64),
        torch.tensor([4.0, 0.5], dtype=torch.float64),
        0.01,
    )
    assert w.tolist() == pytest.approx([0.0, 2 / 0.5], abs=1e-12)
    assert math.isfinite(float(w.sum()))


def test_state_follows_objective_names_and_resumes() -> None:
    make = lambda: STCH(warmup_epochs=1, epoch_length=3)  # noqa: E731
    outs = check_permutation_over_trajectory(make, n=9)
    assert not torch.allclose(outs[-1], outs[-2])
    check_resume_over_trajectory(make, n=8)
    check_resume_over_trajectory(lambda: STCH(warmup_epochs=2, epoch_length=1), n=6)


def test_negative_losses_raise() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        STCH()(G, losses=[-1.0, 1.0])
