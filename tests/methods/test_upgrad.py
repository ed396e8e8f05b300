"""UPGrad: the spec's vectors and its defining properties (the update lies in the dual cone
of the rows; the plain sum without conflict; PCGrad for two conflicting rows)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import matrices
from hypothesis import assume, given
from hypothesis import strategies as st

from gradsurgery.methods.pcgrad import PCGrad
from gradsurgery.methods.upgrad import UPGrad

F1 = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], dtype=torch.float64)
F2 = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
F3 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-0.5, -0.5]], dtype=torch.float64)


def _run(method: UPGrad, G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, object]:
    d = method(G)
    block = method.last_report.blocks["block"]  # type: ignore[union-attr]
    return d, block.weights, block


@pytest.mark.parametrize("regularization", [0.0, 1e-8])
def test_spec_vectors(regularization: float) -> None:
    method = UPGrad(regularization=regularization)
    d, w, block = _run(method, F1)
    # Exact: w = (20/9, 30/19).
    torch.testing.assert_close(
        w, torch.tensor([20 / 9, 30 / 19], dtype=torch.float64), rtol=1e-7, atol=0
    )
    torch.testing.assert_close(
        d, torch.tensor([0.5848, 3.8012, 3.8012], dtype=torch.float64), atol=1e-4, rtol=0
    )
    assert block.projected == ("0", "1")  # type: ignore[attr-defined]
    d, w, _ = _run(method, F2)
    torch.testing.assert_close(w, torch.tensor([2.0, 1.5], dtype=torch.float64), rtol=1e-7, atol=0)
    torch.testing.assert_close(d, torch.tensor([0.5, 1.5], dtype=torch.float64), rtol=1e-7, atol=0)
    d, _, _ = _run(method, F3)  # Pareto-stationary: the dual cone is {0}
    torch.testing.assert_close(d, torch.zeros(2, dtype=torch.float64), atol=1e-7, rtol=0)


def test_torchjd_preference_scale() -> None:
    # TorchJD's default p = 1/k: half the library's weights for k = 2 (spec: (1.1109, 0.7894)
    # with TorchJD's regularisation, (1.1111, 0.7895) exact).
    torch.testing.assert_close(UPGrad(preference=[0.5, 0.5])(F1), UPGrad()(F1) / 2)
    with pytest.raises(ValueError, match="3 entries but the table has 2"):
        UPGrad(preference=[1.0, 1.0, 1.0])(F1)


@given(G=matrices(max_k=6))
def test_update_lies_in_the_dual_cone(G: torch.Tensor) -> None:
    # Exact projections: d·g_j ≥ 0 for every j, up to the solver's stated tolerance, which
    # scales with the size of the weights over the unit rows.
    method = UPGrad(regularization=0.0)
    d, w, block = _run(method, G)
    details = block.details  # type: ignore[attr-defined]
    # The solver's stated exception: rows within ~3e-7 of dependence on the active ones.
    exception = 1e-6 if details["dependent"] else 0.0
    assert details["converged"] and details["kkt_residual"] <= 1e-10 + exception
    norms = G.norm(dim=1)
    size = float((w.abs() * norms).sum()) + float(norms.max()) + 1e-300
    assert float((G @ d).min()) >= -(1e-9 + exception) * float(norms.max()) * size


@given(G=matrices(max_k=6))
def test_regularized_update_meets_its_bound(G: torch.Tensor) -> None:
    method = UPGrad()  # regularization 1e-8
    _run(method, G)
    details = method.last_report.blocks["block"].details  # type: ignore[union-attr]
    assert details["kkt_residual"] <= 1e-10 + 1e-8


@given(G=matrices(max_k=6))
def test_no_conflict_gives_the_plain_sum(G: torch.Tensor) -> None:
    # Signs of the dot products, on rows scaled to order one (G Gᵀ itself can underflow).
    scaled = G / G.abs().amax(dim=1, keepdim=True).clamp_min(1e-300)
    assume(bool((scaled @ scaled.T >= 0).all()))
    d, w, block = _run(UPGrad(), G)
    assert bool((w == 1).all()) and block.changed is False  # type: ignore[attr-defined]
    torch.testing.assert_close(d, G.sum(0))


@given(G=matrices(k=2))
def test_two_conflicting_rows_give_pcgrad(G: torch.Tensor) -> None:
    norms = G.norm(dim=1)
    # A row 1e100 times shorter than the other counts as zero here (never projected
    # against), while PCGrad still projects against it.
    assume(bool((norms == 0).any()) or float(norms.min()) > 1e-100 * float(norms.max()))
    scale = float(G.abs().max()) ** 2 * G.shape[1] + 1e-300
    torch.testing.assert_close(
        UPGrad(regularization=0.0)(G), PCGrad()(G), rtol=1e-7, atol=1e-7 * scale**0.5
    )


@given(seed=st.integers(0, 2**32 - 1), a=st.floats(0.01, 100.0))
def test_linear_in_the_preference(seed: int, a: float) -> None:
    G = torch.from_numpy(np.random.default_rng(seed).standard_normal((4, 6)))
    p = [0.5, 1.0, 2.0, 0.0]
    torch.testing.assert_close(
        UPGrad(preference=[a * x for x in p])(G), a * UPGrad(preference=p)(G), rtol=1e-9, atol=1e-9
    )


def test_hyperparameter_checks() -> None:
    with pytest.raises(ValueError, match="preference\\[1\\] must be >= 0"):
        UPGrad(preference=[1.0, -1.0])
    with pytest.raises(TypeError, match="preference must be a list or tuple"):
        UPGrad(preference="1,1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="regularization"):
        UPGrad(regularization=-1e-3)
    assert UPGrad(preference=[1, 2]).preference == (1.0, 2.0)
