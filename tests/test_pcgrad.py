"""PCGrad: hand-derived vectors and its defining properties."""

from __future__ import annotations

import pytest
import torch
from helpers import matrices
from hypothesis import assume, given
from hypothesis import strategies as st

import gradsurgery as gs
from gradsurgery.methods.pcgrad import pcgrad_weights


def naive_pcgrad(G: torch.Tensor, orders: list[list[int]]) -> torch.Tensor:
    """Algorithm 1 of the paper, literally, over the P coordinates."""
    rows = []
    for i in range(G.shape[0]):
        g = G[i].clone()
        for j in orders[i]:
            d = g @ G[j]
            if d < 0 and G[j] @ G[j] > 0:
                g = g - d / (G[j] @ G[j]) * G[j]
        rows.append(g)
    return torch.stack(rows)


def test_two_task_vector() -> None:
    # g1 = (1, 0), g2 = (-1, 1): g1·g2 = -1 -> g1' = g1 + g2/2 = (0.5, 0.5); g2' = g2 + g1 = (0, 1).
    out = gs.PCGrad()(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]))
    torch.testing.assert_close(out, torch.tensor([0.5, 1.5]))


def test_three_dimensional_vector() -> None:
    # J = [[-4, 1, 1], [6, 1, 1]]: g1·g2 = -22, |g1|² = 18, |g2|² = 38.
    # g1' = g1 + 22/38 g2, g2' = g2 + 22/18 g1; their sum = (0.5848, 3.8012, 3.8012).
    J = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], dtype=torch.float64)
    expected = J[0] + 22 / 38 * J[1] + J[1] + 22 / 18 * J[0]
    out = gs.PCGrad()(J)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(
        out, torch.tensor([0.5848, 3.8012, 3.8012], dtype=torch.float64), atol=1e-4, rtol=0
    )


def test_exactly_opposite_pair_cancels() -> None:
    g = torch.tensor([1.0, 2.0, -3.0], dtype=torch.float64)
    out = gs.PCGrad()(torch.stack([g, -g]))
    torch.testing.assert_close(out, torch.zeros(3, dtype=torch.float64))


@given(data=st.data())
def test_equals_the_gramian_free_reference(data: st.DataObject) -> None:
    G = data.draw(matrices())
    method = gs.PCGrad(seed=data.draw(st.integers(0, 2**16)))
    out = method(G)
    orders = method.last_report.blocks["block"].details["order"]
    expected = naive_pcgrad(G, orders).sum(0)
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9 * (1 + G.abs().max().item()))


@given(G=matrices())
def test_no_conflict_means_plain_sum(G: torch.Tensor) -> None:
    gram = G @ G.T
    G = torch.where((gram < 0).any(1, keepdim=True), G.abs(), G)  # make rows non-conflicting
    if ((G @ G.T) < 0).any():
        G = G.abs()
    method = gs.PCGrad()
    out = method(G)
    assert method.last_report.blocks["block"].changed is False
    assert method.last_report.blocks["block"].projected == ()
    torch.testing.assert_close(out, G.sum(0), rtol=1e-12, atol=1e-12)


@given(data=st.data())
def test_projected_rows_do_not_conflict_with_their_last_projection(data: st.DataObject) -> None:
    G = data.draw(matrices(max_k=5))
    orders = [
        [j for j in data.draw(st.permutations(range(G.shape[0]))) if j != i]
        for i in range(G.shape[0])
    ]
    projected = naive_pcgrad(G, orders)
    coefficients_weights, _ = pcgrad_weights(G @ G.T, orders)
    torch.testing.assert_close(coefficients_weights @ G, projected.sum(0), rtol=1e-9, atol=1e-7)
    for i in range(G.shape[0]):
        # The last row g_i was projected on is orthogonal to the final g_i^PC.
        running = G[i].clone()
        last = None
        for j in orders[i]:
            d = running @ G[j]
            if d < 0 and G[j] @ G[j] > 0:
                running = running - d / (G[j] @ G[j]) * G[j]
                last = j
        if last is not None:
            scale = G[i].norm() * G[last].norm() + 1e-12
            assert abs(float(projected[i] @ G[last])) <= 1e-9 * scale
        # A projection never makes a row longer.
        assert projected[i].norm() <= G[i].norm() * (1 + 1e-12) + 1e-12


@given(G=matrices(k=2))
def test_two_tasks_end_without_conflict(G: torch.Tensor) -> None:
    norms = G.norm(dim=1)
    size = G.abs().amax(dim=1)  # unlike the norm, never underflows
    # Domain: squared norms representable in float64 (a row of norm below ~1e-154 counts as
    # zero: see test_rows_below_float64_range_count_as_zero).
    assume(bool(((size == 0) | (size >= 1e-150)).all()))
    out = gs.PCGrad()(G)
    for i in range(2):
        # Rounding in the update is relative to the rows' norms, not to their product.
        assert float(out @ G[i]) >= -1e-9 * float(norms[i] * norms.sum())


def test_mean_reduction_is_sum_over_k() -> None:
    G = torch.randn(4, 9, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(gs.PCGrad(reduction="mean")(G), gs.PCGrad()(G) / 4)


def test_seed_and_generator_control_the_order() -> None:
    G = torch.randn(6, 9, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    outs = {s: gs.PCGrad(seed=s)(G) for s in range(8)}
    torch.testing.assert_close(gs.PCGrad(seed=5)(G), outs[5], rtol=0, atol=0)
    assert any(not torch.equal(outs[0], v) for v in outs.values())
    gen = torch.Generator().manual_seed(5)
    torch.testing.assert_close(gs.PCGrad(generator=gen)(G), outs[5], rtol=0, atol=0)


def test_bad_hyperparameters() -> None:
    with pytest.raises(ValueError, match="reduction"):
        gs.PCGrad(reduction="max")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="generator"):
        gs.PCGrad(generator=3)  # type: ignore[arg-type]


def test_rows_below_float64_range_count_as_zero() -> None:
    # |g_0|² = 4e-507 is below float64's range, so the Gramian (and hence the decision) treats
    # g_0 as a zero row: documented in compute_gramian.
    G = torch.tensor([[0.0, 6.6e-254], [0.0, -1.0]], dtype=torch.float64)
    method = gs.PCGrad()
    out = method(G)
    assert method.last_report.blocks["block"].gramian[0, 0] == 0
    torch.testing.assert_close(out, G.sum(0), rtol=0, atol=0)
