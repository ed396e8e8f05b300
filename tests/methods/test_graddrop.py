"""GradDrop: the specification's vectors, unbiasedness, sign purity of the kept entries."""

from __future__ import annotations

import pytest
import torch
from helpers import matrices
from hypothesis import given
from hypothesis import strategies as st

from gradsurgery.methods.graddrop import GradDrop, graddrop_update, positive_sign_purity

F1 = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], dtype=torch.float64)


def test_spec_vectors() -> None:
    torch.testing.assert_close(positive_sign_purity(F1), torch.tensor([0.6, 1.0, 1.0]).double())
    u = torch.tensor([0.5, 0.5, 0.5])
    torch.testing.assert_close(graddrop_update(F1, u), torch.tensor([6.0, 2.0, 2.0]).double())
    u = torch.tensor([0.7, 0.2, 0.99])
    torch.testing.assert_close(graddrop_update(F1, u), torch.tensor([-4.0, 2.0, 2.0]).double())
    # Full leak keeps everything; leak on one row keeps that row.
    torch.testing.assert_close(graddrop_update(F1, u, leak=[1.0, 1.0]), F1.sum(0))
    torch.testing.assert_close(
        graddrop_update(F1, u, leak=[0.0, 1.0]), torch.tensor([2.0, 2, 2]).double()
    )


@given(G=matrices(max_k=5, max_p=6), data=st.data())
def test_each_coordinate_keeps_one_sign(G: torch.Tensor, data: st.DataObject) -> None:
    # The defining property: per coordinate, the kept entries all have the sign chosen by
    # comparing the purity with the draw, and no entry is scaled.
    p = G.shape[1]
    u = torch.tensor(data.draw(st.lists(st.floats(0, 1), min_size=p, max_size=p))).double()
    out = graddrop_update(G, u)
    purity = positive_sign_purity(G)
    positive = torch.where(G > 0, G, torch.zeros_like(G)).sum(0)
    negative = torch.where(G < 0, G, torch.zeros_like(G)).sum(0)
    expected = torch.where(purity > u, positive, torch.zeros_like(positive)) + torch.where(
        purity < u, negative, torch.zeros_like(negative)
    )
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_unbiased_for_the_sum() -> None:
    G = torch.tensor([[1.0, -2.0, 0.5, 0.0], [-3.0, 1.0, 0.5, 0.0], [0.5, 0.5, -2.0, 0.0]]).double()
    method = GradDrop(seed=0)
    draws = torch.stack([method(G) for _ in range(6000)])
    mean, err = draws.mean(0), draws.std(0) / 6000**0.5 + 1e-12
    assert bool(((mean - G.sum(0)).abs() <= 5 * err).all())
    assert float(draws.std(0)[:3].min()) > 0.5


def test_identical_rows_and_single_row_are_kept() -> None:
    g = torch.tensor([3.0, -4.0, 0.0, 1e-30]).double()
    method = GradDrop(seed=3)
    for _ in range(20):
        torch.testing.assert_close(method(g.expand(3, -1).clone()), 3 * g, rtol=0, atol=0)
        torch.testing.assert_close(method(g[None]), g, rtol=0, atol=0)


def test_seeded_draws_state_and_reset() -> None:
    G = torch.randn(3, 50, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a = GradDrop(seed=5)
    first = [a(G) for _ in range(3)]
    assert not torch.equal(first[0], first[1])
    b = GradDrop(generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(b(G), first[0], rtol=0, atol=0)
    c = GradDrop(seed=5)
    c.load_state_dict(a.state_dict())
    torch.testing.assert_close(c(G), a(G), rtol=0, atol=0)
    a.reset()
    torch.testing.assert_close(a(G), first[0], rtol=0, atol=0)


def test_report_is_marked_element_wise() -> None:
    method = GradDrop()
    method(F1)
    assert method.last_report is not None
    block = method.last_report.blocks["block"]
    assert block.linear is False and block.changed is True


def test_leak_validation() -> None:
    with pytest.raises(ValueError, match="leak"):
        GradDrop(leak=[0.5, 1.5])
    with pytest.raises(TypeError, match="leak"):
        GradDrop(leak=0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2 leak values .* 3 objectives"):
        GradDrop(leak=[0.0, 1.0])(torch.ones(3, 2))
