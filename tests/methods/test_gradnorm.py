"""GradNorm: the spec's vector, the learning of w, the chosen block, state."""

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

import gradsurgery as gs
from gradsurgery.methods.gradnorm import GradNorm

F2 = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)


def with_state(method: GradNorm, names: list[str], w: list[float], initial: list[float]) -> None:
    saved = method.state_dict()
    saved["state"] = {
        "w": {"names": names, "value": torch.tensor(w, dtype=torch.float64), "moments": {}},
        "initial_losses": torch.tensor(initial, dtype=torch.float64),
    }
    method.load_state_dict(saved)


def test_spec_vector() -> None:
    # Spec §5.3: F2, w = (1, 1), L(0) = (2, 1), L = (1, 0.8), α = 1.5: G = (1, 1.4142),
    # r = (0.7692, 1.2308), targets (0.8144, 1.6482), ∂L_grad/∂w = (1, −1.4142).
    method = GradNorm(optimizer="sgd", lr=0.1)
    with_state(method, ["a", "b"], [1.0, 1.0], [2.0, 1.0])
    out = method(F2, objectives=["a", "b"], losses=[1.0, 0.8])
    torch.testing.assert_close(out, F2.sum(0))  # the update uses the current w
    details = method.last_report.blocks["block"].details  # type: ignore[union-attr]
    assert details["norms"] == pytest.approx([1.0, 1.4142], abs=1e-4)
    assert details["rates"] == pytest.approx([0.7692, 1.2308], abs=1e-4)
    assert details["targets"] == pytest.approx([0.8144, 1.6482], abs=1e-4)
    assert details["grad"] == pytest.approx([1.0, -math.sqrt(2)], abs=1e-12)
    # SGD step then renormalisation to Σ w = 2: (0.9, 1.14142) · 2 / 2.04142.
    stepped = [0.9, 1 + 0.1 * math.sqrt(2)]
    expected = [2 * v / sum(stepped) for v in stepped]
    assert list(method.task_weights.values()) == pytest.approx(expected, rel=1e-12)
    method(F2, objectives=["a", "b"], losses=[1.0, 0.8])
    assert report_weights(method).tolist() == pytest.approx(expected, rel=1e-12)


def test_first_call_sets_the_initial_losses() -> None:
    # L(0) = first losses: rates 1, targets Ḡ; w starts at 1.
    method = GradNorm(optimizer="sgd", lr=0.0)
    method(F2, losses=[2.0, 1.0])
    torch.testing.assert_close(report_weights(method), torch.ones(2).double())
    details = method.last_report.blocks["block"].details  # type: ignore[union-attr]
    assert details["rates"] == pytest.approx([1.0, 1.0])
    mean = (1 + math.sqrt(2)) / 2
    assert details["targets"] == pytest.approx([mean, mean])


def test_chosen_block_drives_the_weights() -> None:
    # Block "head" has rows of norms (1, 2): at equal rates w_1 grows, w_2 shrinks.
    matrices = {
        "trunk": torch.tensor([[3.0, 0.0], [0.0, 1.0]], dtype=torch.float64),
        "head": torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64),
    }
    for block, expected_sign in (("head", 1.0), ("trunk", -1.0)):
        method = GradNorm(optimizer="sgd", lr=0.01, block=block)
        table = gs.GradientTable.from_matrices(matrices, losses=[1.0, 1.0])
        method.apply(table)
        w = list(method.task_weights.values())
        assert math.copysign(1.0, w[0] - w[1]) == expected_sign
    # block=None: the Gramians added, norms (√10, √5): like "trunk".
    method = GradNorm(optimizer="sgd", lr=0.01)
    method.apply(gs.GradientTable.from_matrices(matrices, losses=[1.0, 1.0]))
    details = method.last_report.blocks["trunk"].details  # type: ignore[union-attr]
    assert details["norms"] == pytest.approx([math.sqrt(10), math.sqrt(5)])
    with pytest.raises(KeyError, match="unknown block"):
        GradNorm(block="nope").apply(gs.GradientTable.from_matrices(matrices, losses=[1.0, 1.0]))


@settings(max_examples=10)
@given(norms=st.lists(st.floats(0.5, 2.0), min_size=2, max_size=4))
def test_equal_training_rates_equalise_the_weighted_norms(norms: list[float]) -> None:
    # Defining property: at equal training rates every target is Ḡ, and w settles where
    # the weighted norms G_i = w_i‖g_i‖ are equal (up to the sign-gradient's step size).
    k = len(norms)
    G = torch.diag(torch.tensor(norms, dtype=torch.float64))
    method = GradNorm(optimizer="sgd", lr=1e-2)
    method(G, losses=[1.0] * k)
    for _ in range(400):
        method(G, losses=[0.5] * k)
    details = method.last_report.blocks["block"].details  # type: ignore[union-attr]
    weighted = torch.tensor(details["norms"])
    assert float((weighted - weighted.mean()).abs().max()) < 0.05 * float(weighted.mean())


def test_slower_objectives_get_larger_weighted_norms() -> None:
    # Rates r = (4/3, 2/3) at equal row norms: the slower objective ends with the larger
    # weighted norm, near its target ratio (r_1/r_2)^1.5 = 2.83 (Σ w = k keeps it from
    # reaching both targets exactly).
    G = torch.eye(2, dtype=torch.float64)
    method = GradNorm(optimizer="sgd", lr=1e-2)
    method(G, losses=[1.0, 1.0])
    for _ in range(300):
        method(G, losses=[1.0, 0.5])
    w = list(method.task_weights.values())
    assert 2.3 < w[0] / w[1] < 3.0


def test_zero_row_weight_is_bounded() -> None:
    # A zero row: its G_i = 0 < target, so w_i grows; the clip at 0 and Σ w = k bound it.
    G = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    method = GradNorm(optimizer="sgd", lr=0.5)
    for _ in range(50):
        method(G, losses=[1.0, 1.0, 1.0])
    w = torch.tensor(list(method.task_weights.values()), dtype=torch.float64)
    assert bool((w >= 0).all()) and float(w.sum()) == pytest.approx(3.0)


def test_state_follows_objective_names_and_resumes() -> None:
    outs = check_permutation_over_trajectory(lambda: GradNorm(lr=0.05))
    assert not torch.allclose(outs[-1], outs[0])
    check_resume_over_trajectory(lambda: GradNorm(lr=0.05))
    check_resume_over_trajectory(lambda: GradNorm(optimizer="sgd", lr=0.05))
