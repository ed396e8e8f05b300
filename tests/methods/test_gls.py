"""GLS: the spec's vector and the gradient of the geometric mean."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from loss_steps import report_weights

from gradsurgery.methods.gls import GLS

positive = st.floats(1e-3, 1e3)


def test_spec_vector() -> None:
    # Spec §5.6: L = (2, 0.5): L_geo = 1, paper weights L_geo/(k L_i) = (0.25, 1),
    # library ×k: (0.5, 2).
    G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    method = GLS()
    out = method(G, losses=[2.0, 0.5])
    torch.testing.assert_close(
        report_weights(method), torch.tensor([0.5, 2.0], dtype=torch.float64)
    )
    torch.testing.assert_close(out, torch.tensor([-1.5, 2.0], dtype=torch.float64))
    details = method.last_report.blocks["block"].details  # type: ignore[union-attr]
    assert details["geometric_mean"] == pytest.approx(1.0)


@given(losses=st.lists(positive, min_size=1, max_size=6))
def test_weights_are_k_times_the_gradient_of_the_geometric_mean(losses: list[float]) -> None:
    # The defining equation: the rows' weights are those of ∇_L (Π L_i)^{1/k}, times k.
    k = len(losses)
    L = torch.tensor(losses, dtype=torch.float64, requires_grad=True)
    (L.prod() ** (1.0 / k)).backward()
    assert L.grad is not None
    method = GLS()
    method(torch.eye(k, dtype=torch.float64), losses=losses)
    torch.testing.assert_close(report_weights(method), k * L.grad, rtol=1e-9, atol=0)


@given(losses=st.lists(positive, min_size=1, max_size=6), c=positive)
def test_weights_ignore_a_common_loss_scale(losses: list[float], c: float) -> None:
    method = GLS()
    k = len(losses)
    method(torch.eye(k, dtype=torch.float64), losses=losses)
    a = report_weights(method)
    method(torch.eye(k, dtype=torch.float64), losses=[c * v for v in losses])
    torch.testing.assert_close(report_weights(method), a, rtol=1e-9, atol=0)
    # Their geometric mean is 1.
    assert float(torch.log(a).mean()) == pytest.approx(0.0, abs=1e-9)


def test_zero_loss_is_floored_and_negative_raises() -> None:
    method = GLS(eps=1e-6)
    method(torch.eye(2, dtype=torch.float64), losses=[0.0, 1.0])
    # L = (1e-6, 1): L_geo = 1e-3, w = (1e3, 1e-3).
    torch.testing.assert_close(
        report_weights(method), torch.tensor([1e3, 1e-3], dtype=torch.float64)
    )
    with pytest.raises(ValueError, match="non-negative"):
        method(torch.eye(2, dtype=torch.float64), losses=[-0.1, 1.0])
