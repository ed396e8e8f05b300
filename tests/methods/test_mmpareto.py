"""MMPareto: the spec's vectors (§6.1), its defining properties and its two levels."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import matrices
from hypothesis import assume, given
from hypothesis import strategies as st
from torch import nn

import gradsurgery as gs
from gradsurgery.methods.mmpareto import MMPareto, min_norm_weights

F2 = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)


def run(method: MMPareto, G: torch.Tensor, names: list[str] | None = None):
    names = names or ["mm", "uni"][: G.shape[0]]
    out = method(G, objectives=names)
    assert method.last_report is not None
    return out, method.last_report.blocks["block"]


def test_spec_vector_conflict() -> None:
    # cos = −0.7071 → MGDA (0.6, 0.4) → new = (0.4, 0.8), ‖new‖ = 0.8944 < ‖sum‖ = 1 → stretch.
    out, block = run(MMPareto(), F2)
    torch.testing.assert_close(out, torch.tensor([0.4472136, 0.8944272], dtype=torch.float64))
    torch.testing.assert_close(block.weights, torch.tensor([1.3416408, 0.8944272]).double())
    assert block.details["conflict"] is True
    assert block.details["min_cosine"] == pytest.approx(-0.7071, abs=1e-4)
    assert block.details["pareto_weights"] == pytest.approx([0.6, 0.4])
    assert block.details["stretch"] == pytest.approx(1 / 0.8944272)
    out, block = run(MMPareto(gamma=1.5), F2)
    torch.testing.assert_close(block.weights, torch.tensor([2.0124612, 1.3416408]).double())
    torch.testing.assert_close(out, torch.tensor([0.6708204, 1.3416408], dtype=torch.float64))


@pytest.mark.parametrize("gamma", [1.0, 1.5])
def test_spec_vector_no_conflict(gamma: float) -> None:
    G = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    out, block = run(MMPareto(gamma=gamma), G)
    torch.testing.assert_close(block.weights, torch.tensor([gamma, gamma]).double())
    torch.testing.assert_close(out, gamma * G.sum(0))
    assert block.details["conflict"] is False and block.details["stretch"] == 1.0


def test_orthogonal_rows_take_the_conflict_branch() -> None:
    # cos = 0 is a conflict (the official test is cos > 0): MGDA w = (4, 1)/5 on ‖g‖² = (1, 4);
    # new = 2(0.8, 0.4) = (1.6, 0.8)... ‖new‖² = 3.2 < ‖sum‖² = 5 → stretched to √5.
    G = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    out, block = run(MMPareto(), G)
    assert block.details["conflict"] is True
    assert block.details["pareto_weights"] == pytest.approx([0.8, 0.2])
    expected = torch.tensor([1.6, 0.8], dtype=torch.float64) * math.sqrt(5 / 3.2)
    torch.testing.assert_close(out, expected)


def test_zero_row_keeps_the_sum_times_gamma() -> None:
    # A zero unimodal row does not take part: one objective left, γ times its gradient —
    # what the official clamped solver gives (0.001·g_mm stretched back to ‖g_mm‖, × γ).
    G = torch.tensor([[1.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    out, block = run(MMPareto(gamma=1.5), G)
    torch.testing.assert_close(out, 1.5 * G[0])
    assert block.details["objectives"] == ("mm",)


def test_cancelling_rows_keep_the_sum_not_a_random_direction() -> None:
    # g and −2g are Pareto-stationary: MGDA's point is 0; the plain sum is kept (× γ).
    g = torch.tensor([0.3, -1.2, 0.7], dtype=torch.float64)
    G = torch.stack([g, -2 * g])
    out, block = run(MMPareto(gamma=1.5), G)
    assert block.details["degenerate"] is True
    torch.testing.assert_close(out, 1.5 * G.sum(0))


def test_two_row_closed_form_is_the_min_norm_point() -> None:
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        G = torch.randn(2, 4, generator=gen, dtype=torch.float64)
        K = (G @ G.T).numpy()
        w = min_norm_weights(K)
        xs = torch.linspace(0, 1, 2001, dtype=torch.float64)
        grid = torch.stack([xs, 1 - xs], 1) @ G
        assert float((torch.tensor(w) @ G).norm()) <= float(grid.norm(dim=1).min()) + 1e-12


@st.composite
def conflicting(draw: st.DrawFn, n: int | None = None) -> torch.Tensor:
    G = draw(matrices(k=n if n is not None else draw(st.integers(2, 4)), max_p=5)).clone()
    for row in G:
        if float(row.norm()) < 1e-3:
            row[0] += 1.0
    off = ~torch.eye(G.shape[0], dtype=torch.bool)
    if not bool(((G @ G.T)[off] <= 0).any()):
        G[1] = -G[1]  # now g_0·g_1 < 0: a conflict
    return G


@given(G=conflicting(), gamma=st.sampled_from([1.0, 1.5]))
def test_conflict_result_has_nonnegative_inner_product_with_every_gradient(
    G: torch.Tensor, gamma: float
) -> None:
    # The defining property: with conflict, the update is a positive multiple of MGDA's
    # min-norm point d*, and d*·g_i ≥ ‖d*‖² ≥ 0 for every row — the fused and each unimodal
    # gradient all descend (unless the rows are Pareto-stationary and the sum is kept).
    names = ["mm"] + [f"u{i}" for i in range(1, G.shape[0])]
    out, block = run(MMPareto(gamma=gamma), G, names)
    assert block.details["conflict"] is True
    assume(not block.details["degenerate"])
    # Up to the precision of a min-norm point solved on a float64 Gramian (about √eps).
    scale = float(G.norm(dim=1).max()) * float(out.norm()) + 1e-12
    assert bool((G @ out >= -1e-6 * scale).all()), (G @ out).tolist()


@given(G=conflicting(), gamma=st.sampled_from([1.0, 1.5]))
def test_magnitude_rule(G: torch.Tensor, gamma: float) -> None:
    # ‖d‖ = γ · max(‖n Σ w_i g_i‖, ‖Σ g_i‖) and d is parallel to Σ w_i g_i.
    names = ["mm"] + [f"u{i}" for i in range(1, G.shape[0])]
    out, block = run(MMPareto(gamma=gamma), G, names)
    assume(not block.details["degenerate"])
    w = torch.tensor(block.details["pareto_weights"], dtype=torch.float64)
    new = G.shape[0] * (w @ G)
    expected = gamma * max(float(new.norm()), float(G.sum(0).norm()))
    assert float(out.norm()) == pytest.approx(expected, rel=1e-9)
    cos = float(out @ new) / (float(out.norm()) * float(new.norm()))
    assert cos == pytest.approx(1.0, abs=1e-9)


@given(G=matrices(k=2), gamma=st.sampled_from([1.0, 1.5]))
def test_no_conflict_gives_gamma_times_the_sum(G: torch.Tensor, gamma: float) -> None:
    G = G.clone()
    G[0, 0] += 1.0 if float(G[0].norm()) < 1e-3 else 0.0
    if float(G[0] @ G[1]) < 0:
        G[1] = -G[1]
    if float(G[0] @ G[1]) <= 1e-6:
        G[1] += G[0]  # now g_0·g_1 ≥ ‖g_0‖² > 0
    out, block = run(MMPareto(gamma=gamma), G)
    assert block.details["conflict"] is False
    torch.testing.assert_close(out, gamma * G.sum(0), rtol=1e-12, atol=1e-12)


def official(parts_mm: list[torch.Tensor], parts_m: list[torch.Tensor], gamma: float):
    """MMPareto's rule written directly on the rows, per parameter tensor (spec §6.1)."""
    g_mm, g_m = torch.cat(parts_mm), torch.cat(parts_m)
    if float(torch.nn.functional.cosine_similarity(g_mm, g_m, dim=0)) > 0:
        w = (0.5, 0.5)
    else:
        a, b, c = float(g_mm @ g_mm), float(g_mm @ g_m), float(g_m @ g_m)
        w1 = (c - b) / (a + c - 2 * b)
        w = (w1, 1 - w1)
    out = []
    for pm, pu in zip(parts_mm, parts_m):
        new = 2 * w[0] * pm + 2 * w[1] * pu
        ratio = float((pm + pu).norm() / new.norm())
        out.append(gamma * (ratio * new if ratio > 1 else new))
    return out


def test_two_levels_direction_on_the_group_magnitude_per_block() -> None:
    # One encoder split into two blocks: the direction is decided on both together, each
    # block's norm is restored on its own — the official per-tensor loop.
    gen = torch.Generator().manual_seed(3)
    for _ in range(50):
        rows = {b: torch.randn(2, 3, generator=gen, dtype=torch.float64) for b in ("w", "b")}
        table = gs.GradientTable.from_matrices(rows, ["mm", "audio"])
        updates, report = MMPareto(gamma=1.5).apply(table)
        want = official([rows["w"][0], rows["b"][0]], [rows["w"][1], rows["b"][1]], 1.5)
        torch.testing.assert_close(updates["w"], want[0])
        torch.testing.assert_close(updates["b"], want[1])
        assert report.blocks["w"].details["group"] == ("w", "b")
        assert report.blocks["w"].details["pareto_weights"] == pytest.approx(
            report.blocks["b"].details["pareto_weights"]
        )


def test_block_scope_decides_each_block_alone() -> None:
    gen = torch.Generator().manual_seed(4)
    rows = {b: torch.randn(2, 3, generator=gen, dtype=torch.float64) for b in ("w", "b")}
    table = gs.GradientTable.from_matrices(rows, ["mm", "audio"])
    updates, report = MMPareto(scope="block").apply(table)
    for b in rows:
        torch.testing.assert_close(updates[b], MMPareto()(rows[b], objectives=["mm", "audio"]))
        assert report.blocks[b].details["group"] == (b,)


class TwoEncoders(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.audio = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
        self.video = nn.Sequential(nn.Linear(6, 3), nn.Tanh())
        self.head = nn.Linear(6, 2)
        self.head_a = nn.Linear(3, 2)
        self.head_v = nn.Linear(3, 2)

    def losses(self, xa: torch.Tensor, xv: torch.Tensor, y: torch.Tensor):
        za, zv = self.audio(xa), self.video(xv)
        ce = nn.functional.cross_entropy
        return {
            "mm": ce(self.head(torch.cat([za, zv], 1)), y),
            "audio": ce(self.head_a(za), y),
            "video": ce(self.head_v(zv), y),
        }


def test_groups_come_from_which_objectives_reach_the_blocks() -> None:
    torch.manual_seed(0)
    model = TwoEncoders()
    xa, xv, y = torch.randn(8, 4), torch.randn(8, 6), torch.randint(0, 2, (8,))
    split = {
        "audio.0": model.audio[0].parameters(),
        "audio.2": model.audio[2].parameters(),
        "video": model.video.parameters(),
    }
    table = gs.gradient_table(model.losses(xa, xv, y), split, retain_graph=True)
    method = MMPareto()
    groups = method.groups(table)
    assert sorted(groups.values()) == [["audio.0", "audio.2"], ["video"]]
    updates, report = method.apply(table)
    assert report.blocks["audio.0"].details["objectives"] == ("mm", "audio")
    assert report.blocks["video"].details["objectives"] == ("mm", "video")
    # Against the rule on whole encoders, per parameter tensor.
    rows = {name: table[name].matrix for name in split}
    ia, iv = table.index("audio"), table.index("video")
    want = official(
        [rows["audio.0"][0], rows["audio.2"][0]], [rows["audio.0"][ia], rows["audio.2"][ia]], 1.0
    )
    torch.testing.assert_close(updates["audio.0"], want[0])
    torch.testing.assert_close(updates["audio.2"], want[1])
    (want_v,) = official([rows["video"][0]], [rows["video"][iv]], 1.0)
    torch.testing.assert_close(updates["video"], want_v)


def test_a_head_in_a_block_gets_gamma_times_its_plain_gradient() -> None:
    torch.manual_seed(0)
    model = TwoEncoders()
    xa, xv, y = torch.randn(8, 4), torch.randn(8, 6), torch.randint(0, 2, (8,))
    blocks = {
        "audio": model.audio.parameters(),
        "video": model.video.parameters(),
        "head_a": model.head_a.parameters(),
    }
    table = gs.gradient_table(model.losses(xa, xv, y), blocks)
    updates, report = MMPareto(gamma=1.5).apply(table)
    torch.testing.assert_close(updates["head_a"], 1.5 * table["head_a"].matrix.sum(0))
    assert report.blocks["head_a"].details["objectives"] == ("audio",)
    assert report.blocks["audio"].details["group"] == ("audio",)


def test_hyperparameters_are_checked() -> None:
    with pytest.raises(ValueError, match="gamma must be > 0"):
        MMPareto(gamma=0.0)
    with pytest.raises(ValueError, match="scope must be one of"):
        MMPareto(scope="global")  # type: ignore[arg-type]
    assert gs.build({"method": "mmpareto", "gamma": 1.5}).hyperparameters() == {
        "gamma": 1.5,
        "scope": "group",
    }
