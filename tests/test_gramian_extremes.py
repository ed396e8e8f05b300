"""Extreme magnitudes: tiny float32 rows still get their surgery; float64 overflow raises."""

from __future__ import annotations

import pytest
import torch

import gradsurgery as gs
from gradsurgery.core.gramian import compute_gramian


@pytest.mark.parametrize("scale", [1e-30, 1e-20, 1.0, 1e15])
def test_float32_rows_of_any_norm_are_projected(scale: float) -> None:
    G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]]) * scale
    method = gs.PCGrad()
    out = method(G)
    assert method.last_report.blocks["block"].projected  # the conflict was seen
    expected = torch.tensor([0.5, 1.5]) * scale  # (½, ½) + (0, 1): both rows projected
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=0)


def test_tiny_gramian_is_exact_in_float64() -> None:
    G = torch.full((2, 3), 1e-30)
    gram = compute_gramian(G)
    torch.testing.assert_close(gram, torch.full((2, 2), 3e-60, dtype=torch.float64))


def test_zero_rows_stay_zero_without_rescaling() -> None:
    G = torch.zeros(2, 5)
    G[0] = 1.0
    torch.testing.assert_close(
        compute_gramian(G), torch.tensor([[5.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    )


def test_float64_overflow_raises_or_skips() -> None:
    G = torch.tensor([[1e300, 1e300], [-1e300, 1e300]], dtype=torch.float64)
    with pytest.raises(gs.NonFiniteGradientError, match="overflow float64"):
        gs.PCGrad()(G)
    method = gs.PCGrad()
    out = method(G, on_nonfinite="skip")
    assert method.last_report.skipped
    torch.testing.assert_close(out, G.sum(0))


def test_huge_float32_rows_finish_in_float64() -> None:
    G = torch.full((2, 4), 3e20)  # squared norms overflow float32, not float64
    G[1] *= -1
    method = gs.PCGrad()
    out = method(G)
    assert torch.isfinite(out).all()
    assert bool(method.last_report.blocks["block"].conflict[0, 1])
