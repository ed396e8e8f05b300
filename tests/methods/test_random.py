"""Random weighting (RLW): the draw it is, its distribution, and its seeded state."""

from __future__ import annotations

import pytest
import torch
from helpers import matrices
from hypothesis import given
from hypothesis import strategies as st

from gradsurgery.core.table import GradientTable
from gradsurgery.methods.random import Random


def _weights(method: Random, block: str = "block") -> torch.Tensor:
    assert method.last_report is not None
    return method.last_report.blocks[block].weights


@given(G=matrices(max_k=6), seed=st.integers(0, 2**16))
def test_weights_are_k_times_softmax_of_the_generators_normal_draw(
    G: torch.Tensor, seed: int
) -> None:
    # The specification's test: same generator, same draw.
    k = G.shape[0]
    method = Random(seed=seed)
    out = method(G)
    z = torch.randn(k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    expected = k * torch.softmax(z, dim=0)
    torch.testing.assert_close(_weights(method), expected, rtol=0, atol=0)
    assert bool((expected > 0).all())
    assert float(expected.sum()) == pytest.approx(k, rel=1e-12)
    torch.testing.assert_close(out, expected @ G)


def test_distribution() -> None:
    # E[w_i] = 1 for every i, and the draws vary.
    method = Random(seed=0)
    G = torch.eye(4, dtype=torch.float64)
    draws = torch.stack([method(G) for _ in range(4000)])
    assert bool((draws > 0).all())
    torch.testing.assert_close(draws.sum(1), torch.full((4000,), 4.0).double())
    mean, err = draws.mean(0), draws.std(0) / 4000**0.5
    assert bool(((mean - 1).abs() < 5 * err).all())
    assert float(draws.std(0).min()) > 0.3


def test_one_draw_for_all_blocks_unless_block_scope() -> None:
    gen = torch.Generator().manual_seed(0)
    table = GradientTable.from_matrices(
        {"a": torch.randn(3, 4, generator=gen), "b": torch.randn(3, 2, generator=gen)}
    )
    method = Random(seed=1)
    method.apply(table)
    torch.testing.assert_close(_weights(method, "a"), _weights(method, "b"), rtol=0, atol=0)
    per_block = Random(seed=1, scope="block")
    per_block.apply(table)
    assert not torch.equal(_weights(per_block, "a"), _weights(per_block, "b"))


def test_seed_generator_state_and_reset() -> None:
    G = torch.randn(5, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    a = Random(seed=7)
    first = [a(G) for _ in range(3)]
    b = Random(generator=torch.Generator().manual_seed(7))
    for out in first:
        torch.testing.assert_close(b(G), out, rtol=0, atol=0)
    saved = a.state_dict()
    c = Random(seed=7)
    c.load_state_dict(saved)
    torch.testing.assert_close(c(G), a(G), rtol=0, atol=0)
    a.reset()
    torch.testing.assert_close(a(G), first[0], rtol=0, atol=0)
    assert not torch.equal(first[0], first[1])
