"""FairGrad: the specification's vectors, the α-fair condition K w = w^(−1/α), its scaling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import matrices
from hypothesis import assume, given
from hypothesis import strategies as st

from gradsurgery.methods.fairgrad import FairGrad
from gradsurgery.methods.nashmtl import NashMTL
from gradsurgery.solvers.simplex import min_norm_on_simplex

F1 = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], dtype=torch.float64)
F2 = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
F3 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-0.5, -0.5]], dtype=torch.float64)


def _weights(method: FairGrad) -> torch.Tensor:
    assert method.last_report is not None
    return method.last_report.blocks["block"].weights


@pytest.mark.parametrize(
    ("alpha", "f1", "f2"),
    [
        (1.0, (0.5915, 0.4071), (1.8478, 1.3066)),
        (2.0, (0.4714, 0.3195), (2.1741, 1.4958)),
        (0.5, (0.7428, 0.5254), (1.5647, 1.1563)),
    ],
)
def test_spec_vectors(alpha: float, f1: tuple[float, float], f2: tuple[float, float]) -> None:
    method = FairGrad(alpha=alpha)
    method(F1)
    torch.testing.assert_close(_weights(method), torch.tensor(f1).double(), atol=1e-4, rtol=0)
    method(F2)
    torch.testing.assert_close(_weights(method), torch.tensor(f2).double(), atol=1e-4, rtol=0)


def test_f1_updates_and_identical_rows() -> None:
    torch.testing.assert_close(
        FairGrad()(F1), torch.tensor([0.0766, 0.9985, 0.9985]).double(), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(
        FairGrad(alpha=2.0)(F1), torch.tensor([0.0313, 0.7908, 0.7908]).double(), atol=1e-4, rtol=0
    )
    F4 = torch.tensor([[3.0, 4.0]] * 3, dtype=torch.float64)
    method = FairGrad(alpha=2.0)
    method(F4)
    torch.testing.assert_close(_weights(method), torch.full((3,), 75 ** (-2 / 3)).double())
    torch.testing.assert_close(FairGrad(alpha=2.0, normalize="sum")(F4), 3 * F4[0])
    # k = 1: w = ‖g‖^(−2α/(α+1)).
    method(F4[:1])
    torch.testing.assert_close(_weights(method), torch.tensor([5.0 ** (-4 / 3)]).double())


def test_alpha_one_is_nash_without_clipping() -> None:
    gen = torch.Generator().manual_seed(0)
    G = torch.randn(4, 7, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(FairGrad(alpha=1.0)(G), NashMTL(max_norm=None)(G), rtol=1e-9, atol=0)


def test_pareto_stationary_rows_give_zero() -> None:
    method = FairGrad(alpha=2.0)
    torch.testing.assert_close(method(F3), torch.zeros(2).double())
    assert method.last_report is not None
    assert method.last_report.blocks["block"].details["feasible"] is False


def _feasible(G: torch.Tensor) -> bool:
    # Domain: rows whose squared norms are normal float64 numbers (an all-tiny block has a
    # subnormal Gramian, which has lost its precision before any method sees it).
    if float(G.norm(dim=1).max()) < 1e-150:
        return False
    K = (G @ G.T).numpy()
    size = float(np.trace(K)) / K.shape[0]
    return size > 0 and min_norm_on_simplex(K / size)[1] > 1e-6


@given(G=matrices(max_k=5, max_p=6), alpha=st.sampled_from([0.25, 0.5, 1.0, 2.0, 5.0]))
def test_alpha_fair_condition(G: torch.Tensor, alpha: float) -> None:
    # The defining property: w > 0 and d·g_i = (Kw)_i = w_i^(−1/α) for every objective.
    assume(_feasible(G))
    method = FairGrad(alpha=alpha)
    d = method(G).numpy()
    w = _weights(method).numpy()
    assert (w > 0).all()
    np.testing.assert_allclose(w ** (1 / alpha) * (G.numpy() @ d), 1.0, rtol=0, atol=1e-7)


@given(G=matrices(max_k=4, max_p=5), alpha=st.sampled_from([0.5, 2.0]), c=st.floats(0.1, 10.0))
def test_paper_scale_is_degree_one_minus_alpha_over_one_plus_alpha(
    G: torch.Tensor, alpha: float, c: float
) -> None:
    assume(_feasible(G))
    a = FairGrad(alpha=alpha)(G)
    b = FairGrad(alpha=alpha)(c * G)
    expected = c ** ((1 - alpha) / (1 + alpha)) * a
    torch.testing.assert_close(b, expected, rtol=1e-6, atol=1e-9 * float(expected.abs().max()))


def test_bad_hyperparameters() -> None:
    for kwargs in ({"alpha": 0.0}, {"alpha": -1.0}, {"normalize": "mean"}):
        with pytest.raises(ValueError):
            FairGrad(**kwargs)
    with pytest.raises(TypeError):
        FairGrad(alpha="1")  # type: ignore[arg-type]
