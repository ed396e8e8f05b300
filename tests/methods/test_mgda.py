"""MGDA: the spec's vectors, the min-norm optimality of its update, its solvers and its
gradient normalisations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import matrices
from hypothesis import given
from hypothesis import strategies as st

from gradsurgery.core.gramian import compute_gramian
from gradsurgery.core.table import GradientTable
from gradsurgery.methods.mgda import MGDA
from gradsurgery.solvers.scaled_gramian import scaled_gramian

F1 = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], dtype=torch.float64)
F2 = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
F3 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-0.5, -0.5]], dtype=torch.float64)
F4 = torch.tensor([[3.0, 4.0]] * 3, dtype=torch.float64)
F5 = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
SOLVERS = ["exact", "frank_wolfe"]


def _run(method: MGDA, G: torch.Tensor, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
    d = method(G, **kwargs)  # type: ignore[arg-type]
    assert method.last_report is not None
    return d, method.last_report.blocks["block"].weights


@pytest.mark.parametrize("solver", SOLVERS)
def test_f1(solver: str) -> None:
    # Simplex weights (0.6, 0.4), update (0, 1, 1); library scale ×k = 2.
    d, w = _run(MGDA(solver=solver), F1)
    torch.testing.assert_close(w, torch.tensor([1.2, 0.8], dtype=torch.float64))
    torch.testing.assert_close(d, torch.tensor([0.0, 2.0, 2.0], dtype=torch.float64))


@pytest.mark.parametrize("solver", SOLVERS)
def test_f2_common_descent(solver: str) -> None:
    d, w = _run(MGDA(solver=solver), F2)
    torch.testing.assert_close(w, torch.tensor([1.2, 0.8], dtype=torch.float64))
    simplex = d / 2  # (0.2, 0.4)
    torch.testing.assert_close(simplex, torch.tensor([0.2, 0.4], dtype=torch.float64))
    # d·g1 = d·g2 = 0.2 = ‖d‖² for the simplex point.
    torch.testing.assert_close(F2 @ simplex, torch.full((2,), 0.2, dtype=torch.float64))
    assert float(simplex @ simplex) == pytest.approx(0.2)


@pytest.mark.parametrize("solver", SOLVERS)
def test_f3_pareto_stationary(solver: str) -> None:
    d, w = _run(MGDA(solver=solver), F3)
    torch.testing.assert_close(w, 3 * torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64))
    torch.testing.assert_close(d, torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)


def test_f4_identical_rows() -> None:
    # Any simplex point is optimal: the update is 3·g either way; Frank-Wolfe keeps 1/3 each,
    # the exact solver returns a vertex.
    for solver in SOLVERS:
        d, _ = _run(MGDA(solver=solver), F4)
        torch.testing.assert_close(d, torch.tensor([9.0, 12.0], dtype=torch.float64))
    _, w = _run(MGDA(solver="frank_wolfe"), F4)
    torch.testing.assert_close(w, torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("solver", SOLVERS)
def test_f5_zero_row_and_parallel_rows(solver: str) -> None:
    d, w = _run(MGDA(solver=solver), F5)
    torch.testing.assert_close(w, torch.tensor([0.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(d, torch.zeros(2, dtype=torch.float64))
    # Parallel rows (1, 0), (2, 0): the vertex (1, 0), not Sener's clamped (0.999, 0.001).
    parallel = torch.tensor([[1.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    _, w = _run(MGDA(solver=solver), parallel)
    torch.testing.assert_close(w, torch.tensor([2.0, 0.0], dtype=torch.float64))


def test_single_row_and_zero_input() -> None:
    g = torch.tensor([[3.0, -1.0]], dtype=torch.float64)
    torch.testing.assert_close(MGDA()(g), g[0])
    _, w = _run(MGDA(), torch.zeros(3, 2, dtype=torch.float64))
    torch.testing.assert_close(w, torch.ones(3, dtype=torch.float64))


@given(G=matrices(max_k=6), solver=st.sampled_from(SOLVERS))
def test_update_is_the_min_norm_point(G: torch.Tensor, solver: str) -> None:
    # KKT of min ‖Σ w_i g_i‖² over the simplex, in gradient space: g_i·d ≥ ‖d‖² for every i,
    # with equality where w_i > 0 (exact solver; Frank-Wolfe only gets close).
    method = MGDA(solver=solver)
    k = G.shape[0]
    d, w = _run(method, G)
    details = method.last_report.blocks["block"].details  # type: ignore[union-attr]
    simplex = torch.tensor(details["w"], dtype=torch.float64)
    assert simplex.min() >= 0 and abs(float(simplex.sum()) - 1) < 1e-12
    torch.testing.assert_close(w, k * simplex)
    ds = d / k
    scale = float(G.abs().max()) ** 2 * G.shape[1] + 1e-300
    gaps = G @ ds - ds @ ds
    if solver == "exact":
        assert details["converged"] and details["kkt_residual"] <= 1e-10
        assert float(gaps.min()) >= -1e-9 * scale
        assert float(gaps[simplex > 0].abs().max()) <= 1e-9 * scale
    else:
        # Never better than the exact optimum.
        exact = MGDA()(G) / k
        assert float(ds @ ds) >= float(exact @ exact) - 1e-12 * scale


@given(G=matrices(k=2))
def test_two_rows_closed_form(G: torch.Tensor) -> None:
    # B2: with a = K11, b = K12, c = K22: b ≥ a → (1, 0); b ≥ c → (0, 1); else the segment.
    # Exact even where G Gᵀ would underflow (rows below 1e-154 are rescaled first).
    K = scaled_gramian(compute_gramian(G), [G])[0]
    a, b, c = K[0, 0], K[0, 1], K[1, 1]
    if a == b == c == 0:
        w1 = 0.5  # rows whose squares underflow: any point is optimal, uniform is returned
    elif b >= a:
        w1 = 1.0
    elif b >= c:
        w1 = 0.0
    else:
        w1 = (c - b) / (a + c - 2 * b)
    expected = 2 * (w1 * G[0] + (1 - w1) * G[1])
    scale = float(G.abs().max()) + 1e-300
    torch.testing.assert_close(MGDA()(G), expected, rtol=1e-7, atol=1e-7 * scale)


def test_normalizations() -> None:
    # l2: rows divided by their norms, weights w_i/n_i on the original rows.
    n = F1.norm(dim=1)
    unit = F1 / n[:, None]
    expected_w = MGDA(normalization="none")(unit)  # 2·(min-norm point of the unit rows)
    d, w = _run(MGDA(normalization="l2"), F1)
    torch.testing.assert_close(d, expected_w)
    torch.testing.assert_close(w @ F1, d)
    # loss: rows divided by L_i; loss+: by L_i‖g_i‖.
    losses = torch.tensor([2.0, 0.5], dtype=torch.float64)
    d, _ = _run(MGDA(normalization="loss"), F1, losses=losses)
    torch.testing.assert_close(d, MGDA()(F1 / losses[:, None]))
    d, _ = _run(MGDA(normalization="loss+"), F1, losses=losses)
    torch.testing.assert_close(d, MGDA()(F1 / (losses * n)[:, None]))
    method = MGDA(normalization="loss+")
    method(F1, losses=losses)
    details = method.last_report.blocks["block"].details  # type: ignore[union-attr]
    np.testing.assert_allclose(details["normalizers"], (losses * n).tolist())


def test_loss_normalization_needs_positive_losses() -> None:
    with pytest.raises(ValueError, match="positive"):
        MGDA(normalization="loss")(F1, losses=[1.0, 0.0])
    with pytest.raises(ValueError, match="MGDA reads the objectives' loss values"):
        MGDA(normalization="loss")(F1)  # found by the up-front table check
    MGDA(normalization="l2")(F1)  # the other normalisations read no losses


def test_l2_normalization_keeps_a_zero_row_at_weight_zero() -> None:
    d, w = _run(MGDA(normalization="l2"), F5)
    assert torch.isfinite(w).all()
    torch.testing.assert_close(d, torch.zeros(2, dtype=torch.float64))


def test_report_details_and_hyperparameters() -> None:
    method = MGDA(solver="frank_wolfe", epsilon=1e-6, max_iters=500)
    method(F1)
    details = method.last_report.blocks["block"].details  # type: ignore[union-attr]
    assert set(details) == {"w", "iterations", "kkt_residual", "converged", "dependent"}
    assert method.hyperparameters() == {
        "solver": "frank_wolfe",
        "epsilon": 1e-6,
        "max_iters": 500,
        "normalization": "none",
        "scope": "block",
    }
    with pytest.raises(ValueError, match="solver"):
        MGDA(solver="fw")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="epsilon"):
        MGDA(epsilon=0.0)
    with pytest.raises(ValueError, match="normalization"):
        MGDA(normalization="l1")  # type: ignore[arg-type]


def test_global_scope_decides_on_the_summed_gramian() -> None:
    a = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    b = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    table = GradientTable.from_matrices({"a": a, "b": b})
    _, report = MGDA(scope="global").apply(table)
    both = torch.cat([a, b], dim=1)
    _, expected = _run(MGDA(), both)
    for block in ("a", "b"):
        torch.testing.assert_close(report.blocks[block].weights, expected)
