"""DWA: the spec's vector through real epochs, epoch handling, state."""

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

from gradsurgery.methods.dwa import DWA, dwa_weights

G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
SPEC = torch.tensor([2 / (1 + math.exp(0.1)), 2 / (1 + math.exp(-0.1))], dtype=torch.float64)


def test_spec_vector() -> None:
    # Spec §5.2: L̄(t−2) = (1.25, 0.8), L̄(t−1) = (1, 0.8) → r = (0.8, 1),
    # w = 2·softmax(r/2) = (0.9500, 1.0500).
    method = DWA()
    method.set_epoch(0)
    for values in ([1.5, 0.6], [1.0, 1.0]):  # epoch mean (1.25, 0.8)
        method(G, losses=values)
        torch.testing.assert_close(report_weights(method), torch.ones(2).double())
    method.set_epoch(1)
    for values in ([0.5, 0.9], [1.5, 0.7], [1.0, 0.8]):  # epoch mean (1, 0.8)
        method(G, losses=values)
        torch.testing.assert_close(report_weights(method), torch.ones(2).double())
    method.set_epoch(2)
    out = method(G, losses=[7.0, 0.1])  # this epoch's losses do not enter its weights
    torch.testing.assert_close(report_weights(method), SPEC)
    assert report_weights(method).tolist() == pytest.approx([0.9500, 1.0500], abs=1e-4)
    torch.testing.assert_close(out, SPEC @ G)
    details = method.last_report.blocks["block"].details  # type: ignore[union-attr]
    assert details["ratios"] == pytest.approx([0.8, 1.0])
    assert details["epoch"] == 2
    # Still epoch 2: same weights whatever the losses.
    method(G, losses=[0.1, 9.0])
    torch.testing.assert_close(report_weights(method), SPEC)


def test_epoch_length_counts_epochs_itself() -> None:
    method = DWA(epoch_length=2)
    for values in ([1.5, 0.6], [1.0, 1.0], [0.5, 0.9], [1.5, 0.7]):
        method(G, losses=values)
        torch.testing.assert_close(report_weights(method), torch.ones(2).double())
    method(G, losses=[1.0, 1.0])
    # Epoch means (1.25, 0.8) then (1.0, 0.8): the spec's ratios.
    torch.testing.assert_close(report_weights(method), SPEC)


def test_set_epoch_is_idempotent_and_skips_empty_epochs() -> None:
    method = DWA()
    method.set_epoch(0)
    method(G, losses=[1.25, 0.8])
    method.set_epoch(1)
    method.set_epoch(1)
    method.set_epoch(2)  # epoch 1 had no call: nothing enters the history
    method(G, losses=[1.0, 0.8])
    torch.testing.assert_close(report_weights(method), torch.ones(2).double())
    method.set_epoch(3)
    method(G, losses=[5.0, 5.0])
    torch.testing.assert_close(report_weights(method), SPEC)
    with pytest.raises(ValueError, match="epoch must be"):
        method.set_epoch(-1)
    with pytest.raises(TypeError):
        method.set_epoch(1.5)  # type: ignore[arg-type]


@given(
    last=st.lists(st.floats(0.01, 10.0), min_size=2, max_size=5),
    before=st.lists(st.floats(0.01, 10.0), min_size=5, max_size=5),
    temperature=st.floats(0.1, 10.0),
)
def test_slower_objectives_get_more_weight(
    last: list[float], before: list[float], temperature: float
) -> None:
    # Defining property: weights sum to k and follow the order of the ratios.
    k = len(last)
    a = torch.tensor(last, dtype=torch.float64)
    b = torch.tensor(before[:k], dtype=torch.float64)
    w, r = dwa_weights(a, b, temperature)
    assert float(w.sum()) == pytest.approx(k)
    for i in range(k):
        for j in range(k):
            if r[i] > r[j]:
                assert w[i] >= w[j]


def test_state_follows_objective_names_and_resumes() -> None:
    outs = check_permutation_over_trajectory(lambda: DWA(epoch_length=2), n=10)
    assert not torch.allclose(outs[-1], outs[-2])
    check_resume_over_trajectory(lambda: DWA(epoch_length=2), n=10)
    check_resume_over_trajectory(lambda: DWA(epoch_length=3), n=12)


def test_resume_keeps_the_epoch_and_its_running_sums() -> None:
    method = DWA()
    method(G, losses=[1.25, 0.8])
    method.set_epoch(1)
    method(G, losses=[0.5, 0.8])
    other = DWA()
    other.load_state_dict(method.state_dict())
    assert other.epoch == 1
    for m in (method, other):
        m(G, losses=[1.5, 0.8])  # epoch 1 mean (1, 0.8)
        m.set_epoch(2)
        m(G, losses=[1.0, 1.0])
        torch.testing.assert_close(report_weights(m), SPEC)
