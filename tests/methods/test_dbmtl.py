"""DB-MTL: the spec's vector, a second step by hand, the EMA buffers, scale, scope, state."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import matrices
from hypothesis import given
from hypothesis import strategies as st
from loss_steps import (
    check_permutation_over_trajectory,
    check_resume_over_trajectory,
    report_weights,
)

import gradsurgery as gs
from gradsurgery.methods.dbmtl import DBMTL, row_norms

F2 = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)


def test_spec_vector_and_a_second_step() -> None:
    # Spec §5.7: F2, L = (2, 0.5), β = 0.9, first step: ĝ = ((0.05, 0), (−0.2, 0.2)),
    # a = (5.6569, 1), d = (0.0828, 0.2).
    method = DBMTL(eps=0.0 + 1e-300)
    d = method(F2, objectives=["a", "b"], losses=[2.0, 0.5])
    buffers = method.state_dict()["state"]["buffers"]["block"]
    torch.testing.assert_close(
        buffers, torch.tensor([[0.05, 0.0], [-0.2, 0.2]], dtype=torch.float64)
    )
    details = method.last_report.blocks["block"].details  # type: ignore[union-attr]
    assert details["a"] == pytest.approx([4 * math.sqrt(2), 1.0], rel=1e-12)
    assert details["a"] == pytest.approx([5.6569, 1.0], abs=1e-4)
    torch.testing.assert_close(
        d, torch.tensor([0.2 * math.sqrt(2) - 0.2, 0.2], dtype=torch.float64)
    )
    assert d.tolist() == pytest.approx([0.0828, 0.2], abs=1e-4)
    assert method.last_report.blocks["block"].linear is False  # type: ignore[union-attr]
    # Second step, same rows, L = (1, 1), by hand: ĝ_1 = 0.9(0.05, 0) + 0.1(1, 0) = (0.145, 0),
    # ĝ_2 = 0.9(−0.2, 0.2) + 0.1(−1, 1) = (−0.28, 0.28); a = (0.28√2/0.145, 1);
    # d = (0.28√2 − 0.28, 0.28).
    d = method(F2, objectives=["a", "b"], losses=[1.0, 1.0])
    expected = torch.tensor([0.28 * math.sqrt(2) - 0.28, 0.28], dtype=torch.float64)
    torch.testing.assert_close(d, expected)
    details = method.last_report.blocks["block"].details  # type: ignore[union-attr]
    assert details["a"] == pytest.approx([0.28 * math.sqrt(2) / 0.145, 1.0], rel=1e-12)
    assert details["step"] == 2


def test_default_eps_changes_the_vector_only_in_the_ninth_decimal() -> None:
    d = DBMTL()(F2, losses=[2.0, 0.5])
    torch.testing.assert_close(
        d, torch.tensor([0.2 * math.sqrt(2) - 0.2, 0.2], dtype=torch.float64)
    )


def test_beta_zero_is_a_weighted_sum_from_the_row_norms() -> None:
    # β = 0: w_i = max_j(‖g_j‖/L_j)/‖g_i‖; F2, L = (2, 0.5): max(0.5, 2√2) = 2√2,
    # w = (2√2, 2).
    method = DBMTL(beta=0.0, eps=1e-300)
    d = method(F2, losses=[2.0, 0.5])
    expected = torch.tensor([2 * math.sqrt(2), 2.0], dtype=torch.float64)
    torch.testing.assert_close(report_weights(method), expected)
    torch.testing.assert_close(d, expected @ F2)
    assert method.last_report.blocks["block"].linear  # type: ignore[union-attr]
    assert method.state_dict()["state"]["buffers"] == {}


@given(G=matrices(), data=st.data())
def test_every_scaled_buffer_has_the_largest_norm(G: torch.Tensor, data: st.DataObject) -> None:
    # Defining property: d = Σ a_i ĝ_i with every nonzero a_i ĝ_i of norm max_j ‖ĝ_j‖.
    k = G.shape[0]
    losses = data.draw(st.lists(st.floats(0.1, 10.0), min_size=k, max_size=k))
    method = DBMTL()
    method(G, losses=losses)
    method(G.flip(1), losses=losses[::-1])
    buffers = method.state_dict()["state"]["buffers"]["block"]
    details = method.last_report.blocks["block"].details  # type: ignore[union-attr]
    a = torch.tensor(details["a"], dtype=torch.float64)
    norms = (a[:, None] * buffers).norm(dim=1)
    top = float(buffers.norm(dim=1).max())
    for value, coefficient in zip(norms.tolist(), a.tolist()):
        if coefficient > 0:
            assert value == pytest.approx(top, rel=1e-9)
        else:
            assert value == 0.0


factors = st.tuples(st.floats(1.0, 10.0), st.integers(-30, 29)).map(lambda t: t[0] * 10.0 ** t[1])


@given(G=matrices(), c=factors, data=st.data())
def test_paper_scale_is_homogeneous_over_a_trajectory(
    G: torch.Tensor, c: float, data: st.DataObject
) -> None:
    k = G.shape[0]
    losses = data.draw(st.lists(st.floats(0.1, 10.0), min_size=k, max_size=k))
    a, b = DBMTL(), DBMTL()
    # Opposite rows cancel: compare up to the size of the terms (each at most k·max‖g‖/L).
    tol = 1e-9 * c * k * 10 * (float(G.norm(dim=1).max()) + 1e-12)
    for step in range(3):
        rows = G.roll(step, dims=1)
        out_a = a(rows, losses=losses)
        out_b = b(c * rows, losses=losses)
        torch.testing.assert_close(out_b, c * out_a, rtol=1e-9, atol=tol)


@given(g=matrices(k=1), k=st.integers(1, 5), data=st.data())
def test_normalize_sum_gives_the_sum_at_every_step(
    g: torch.Tensor, k: int, data: st.DataObject
) -> None:
    # k identical rows give k·g at every step, whatever the losses at each step.
    method = DBMTL(normalize="sum", sigma=0.5)
    for _ in range(3):
        losses = data.draw(st.lists(st.floats(0.01, 100.0), min_size=k, max_size=k))
        out = method(g.expand(k, -1).clone(), losses=losses)
        torch.testing.assert_close(out, k * g[0], rtol=1e-9, atol=1e-12)


def test_global_scope_takes_the_norms_over_all_blocks() -> None:
    gen = torch.Generator().manual_seed(0)
    parts = {
        n: torch.randn(3, p, generator=gen, dtype=torch.float64) for n, p in [("x", 4), ("y", 2)]
    }
    losses = [0.5, 1.0, 2.0]
    joined = DBMTL()
    split = DBMTL(scope="global")
    for _ in range(2):
        whole = joined(torch.cat([parts["x"], parts["y"]], dim=1), losses=losses)
        updates, _ = split.apply(gs.GradientTable.from_matrices(parts, losses=losses))
        torch.testing.assert_close(torch.cat([updates["x"], updates["y"]]), whole)
    per_block, _ = DBMTL().apply(gs.GradientTable.from_matrices(parts, losses=losses))
    assert not torch.allclose(per_block["x"], updates["x"])


def test_sigma_decays_beta() -> None:
    method = DBMTL(sigma=1.0)
    for step in (1, 2, 3):
        method(F2, losses=[1.0, 1.0])
        details = method.last_report.blocks["block"].details  # type: ignore[union-attr]
        assert details["beta_t"] == pytest.approx(0.9 / step)


def test_zero_rows_and_low_precision() -> None:
    G = torch.tensor([[0.0, 0.0], [3.0, 4.0]], dtype=torch.float64)
    method = DBMTL()
    out = method(G, losses=[1.0, 1.0])
    details = method.last_report.blocks["block"].details  # type: ignore[union-attr]
    assert details["zero"] == ["0"] and details["a"] == [0.0, 1.0]
    torch.testing.assert_close(out, 0.1 * G[1] / (1 + 1e-8))
    half = DBMTL()(G.to(torch.bfloat16), losses=[1.0, 1.0])
    assert half.dtype == torch.bfloat16
    # Norms are right far outside float32's squared range.
    tiny = torch.tensor([[3e-30, 4e-30], [1e30, 0.0]], dtype=torch.float32)
    torch.testing.assert_close(
        row_norms(tiny), torch.tensor([5e-30, 1e30], dtype=torch.float64), rtol=1e-6, atol=0
    )


def test_state_follows_objective_names_and_resumes() -> None:
    outs = check_permutation_over_trajectory(DBMTL)
    assert not torch.allclose(outs[-1], outs[0])
    check_permutation_over_trajectory(lambda: DBMTL(normalize="sum", sigma=0.5))
    check_resume_over_trajectory(DBMTL)
    check_resume_over_trajectory(lambda: DBMTL(beta=0.5, sigma=0.5, scope="global"))


def test_changed_blocks_need_a_reset() -> None:
    method = DBMTL()
    method(F2, losses=[1.0, 1.0])
    saved = method.state_dict()
    with pytest.raises(ValueError, match="reset"):
        method(torch.ones(2, 3, dtype=torch.float64), losses=[1.0, 1.0])
    assert method.state_dict()["state"]["step"] == saved["state"]["step"]  # nothing advanced
