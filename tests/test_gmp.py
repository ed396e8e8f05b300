"""GMP: hand-derived vectors, the paper's invariants (spec §1.11) and the ablations."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import matrices
from hypothesis import assume, example, given
from hypothesis import strategies as st

import gradsurgery as gs
from gradsurgery.solvers.modulation import discrepancy_ratios, modulation_coefficient

K1 = 1 - math.tanh(1.0)  # 1 − tanh(0.5 · 2)


def table(**blocks: torch.Tensor) -> gs.GradientTable:
    return gs.GradientTable.from_matrices(blocks, ["cls", "dom"])


def apply(method: gs.GMP, signals: dict, **blocks: torch.Tensor):
    return method.apply(table(**blocks), signals)


def test_vector_tie_projects_classification() -> None:
    # ρ_v = 0.8/0.4 = 2, σ_v = 0.6/0.3 = 2: k_v = p_v = 1 − tanh(1), Γ_v = 1 (tie → cls).
    # ĝ_c = k(1, 0), ĝ_d = k(−1, 1), ĝ_c·ĝ_d < 0: g̃_c = k[(1,0) + ½(−1,1)] = k(½, ½),
    # G_v = k(½, ½) + k(−1, 1) = k(−½, 3/2).  Audio: ρ = σ = ½ → k = p = 1; no conflict.
    updates, report = apply(
        gs.GMP(eps=0.0),
        {"v": {"cls": 0.8, "dom": 0.3}, "a": {"cls": 0.4, "dom": 0.6}},
        v=torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64),
        a=torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=torch.float64),
    )
    torch.testing.assert_close(updates["v"], K1 * torch.tensor([-0.5, 1.5], dtype=torch.float64))
    torch.testing.assert_close(updates["a"], torch.tensor([1.0, 2.0], dtype=torch.float64))
    v = report.blocks["v"].details
    assert (v["rho"], v["sigma"], v["gamma"]) == (2.0, 2.0, 1.0)
    assert v["k"] == pytest.approx(K1) and v["p"] == pytest.approx(K1)
    assert v["conflict"] and v["projected_task"] == "cls"
    assert report.blocks["v"].projected == ("cls",)
    assert report.blocks["a"].details["projected_task"] is None
    assert report.blocks["a"].changed is False


def test_vector_domain_stronger_projects_domain() -> None:
    # Equal semantic confidence: ρ = 1, k = 1. σ_v = 0.6/0.2 = 3: p_v = 1 − tanh(1.5), Γ_v = ⅓.
    # v: ĝ_c = (2, 0), ĝ_d = p(−1, 1), conflict: g̃_d = p[(−1,1) + ½(2,0)] = p(0, 1); G = (2, p).
    # a: σ_a = ⅓ → p = 1, Γ_a = 3: g_c = (1,0), g_d = (−2,1): g̃_c = (1,0) − (−2/5)(−2,1)
    #    = (0.2, 0.4); G = (−1.8, 1.4).
    p = 1 - math.tanh(1.5)
    updates, report = apply(
        gs.GMP(eps=0.0),
        {"v": {"cls": 0.5, "dom": 0.2}, "a": {"cls": 0.5, "dom": 0.6}},
        v=torch.tensor([[2.0, 0.0], [-1.0, 1.0]], dtype=torch.float64),
        a=torch.tensor([[1.0, 0.0], [-2.0, 1.0]], dtype=torch.float64),
    )
    torch.testing.assert_close(updates["v"], torch.tensor([2.0, p], dtype=torch.float64))
    torch.testing.assert_close(updates["a"], torch.tensor([-1.8, 1.4], dtype=torch.float64))
    assert report.blocks["v"].details["projected_task"] == "dom"
    assert report.blocks["a"].details["projected_task"] == "cls"


signal = st.floats(0.01, 1.0)


@st.composite
def two_modalities(draw: st.DrawFn):
    # The domain, as in the property suite: entries 0 or of magnitude ≥ 1e-100. Below it a
    # product such as -5e-324 · 2 is a conflict in the test's arithmetic and 0 in the
    # Gramian's (rescaled, then rounded in the subnormal range): either answer is rounding.
    gv = draw(matrices(k=2))
    ga = draw(matrices(k=2))
    for G in (gv, ga):
        tiny = (G != 0) & (G.abs() < 1e-100)
        assume(not bool(tiny.any()))
    signals = {m: {"cls": draw(signal), "dom": draw(signal)} for m in ("v", "a")}
    return gv, ga, signals


@given(r=st.floats(0.0, 50.0), alpha=st.floats(0.01, 1.0))
def test_coefficient_range_and_monotonicity(r: float, alpha: float) -> None:
    c = modulation_coefficient(r, alpha)
    assert 0 < c <= 1
    assert (c == 1) == (r <= 1)
    if r > 1:
        assert c <= 1 - math.tanh(alpha) + 1e-15
        assert modulation_coefficient(r + 0.5, alpha) < c
    assert modulation_coefficient(r, 0.0) == 1.0


@given(data=two_modalities(), alpha_k=st.floats(0.0, 1.0), alpha_p=st.floats(0.0, 1.0))
@example(  # a conflict in unit-scale arithmetic, at row norms 1e-30 apart
    data=(
        torch.tensor([[1.0, 0.0], [0.5, 0.0]], dtype=torch.float64),
        torch.tensor([[0.0, -1e-30, 0.0], [0.0, 2.0, 0.0]], dtype=torch.float64),
        {"v": {"cls": 1.0, "dom": 1.0}, "a": {"cls": 1.0, "dom": 1.0}},
    ),
    alpha_k=0.0,
    alpha_p=0.0,
)
def test_two_modality_invariants(data, alpha_k: float, alpha_p: float) -> None:
    gv, ga, signals = data
    method = gs.GMP(alpha_k=alpha_k, alpha_p=alpha_p, eps=0.0)
    updates, report = apply(method, signals, v=gv, a=ga)
    d = {m: report.blocks[m].details for m in ("v", "a")}
    assert d["v"]["rho"] * d["a"]["rho"] == pytest.approx(1.0)
    assert d["v"]["sigma"] * d["a"]["sigma"] == pytest.approx(1.0)
    assert d["v"]["gamma"] * d["a"]["gamma"] == pytest.approx(1.0)
    assert sum(d[m]["k"] < 1 for m in d) <= 1
    assert sum(d[m]["p"] < 1 for m in d) <= 1
    for m, G in (("v", gv), ("a", ga)):
        k, p = d[m]["k"], d[m]["p"]
        assert 0 < k <= 1 and 0 < p <= 1
        hat_c, hat_d = k * G[0], p * G[1]
        scale = float(G.abs().max()) ** 2 + 1e-12
        task = d[m]["projected_task"]
        if float(hat_c @ hat_d) >= 0:
            assert not d[m]["conflict"] and task is None
            torch.testing.assert_close(updates[m], hat_c + hat_d, rtol=1e-12, atol=1e-12)
        else:
            gamma = d[m]["gamma"]
            assert task == ("cls" if gamma >= 1 else "dom")
            kept, moved = (
                (hat_d, updates[m] - hat_d) if task == "cls" else (hat_c, updates[m] - hat_c)
            )
            projected_from = hat_c if task == "cls" else hat_d
            assert abs(float(moved @ kept)) <= 1e-9 * scale  # orthogonal to the kept one
            assert float(updates[m] @ kept) >= -1e-9 * scale  # the weaker task still descends
            assert float(moved.norm()) <= float(projected_from.norm()) * (1 + 1e-9) + 1e-12


@given(data=two_modalities(), c=st.floats(0.01, 100.0))
def test_positive_homogeneity_across_modalities(data, c: float) -> None:
    gv, ga, signals = data
    a, _ = apply(gs.GMP(), signals, v=gv, a=ga)
    b, _ = apply(gs.GMP(), signals, v=c * gv, a=c * ga)
    for m in a:
        torch.testing.assert_close(b[m], c * a[m], rtol=1e-9, atol=1e-9 * c)


@given(data=two_modalities())
def test_zero_alpha_without_conflict_is_the_plain_sum(data) -> None:
    gv, ga, signals = data
    gv, ga = gv.abs(), ga.abs()  # non-negative rows never conflict
    updates, report = apply(gs.GMP(alpha_k=0.0, alpha_p=0.0), signals, v=gv, a=ga)
    torch.testing.assert_close(updates["v"], gv.sum(0), rtol=0, atol=0)
    torch.testing.assert_close(updates["a"], ga.sum(0), rtol=0, atol=0)
    assert not report.changed


def test_more_than_two_modalities_use_the_mean_of_the_others() -> None:
    q = {"v": 0.9, "a": 0.3, "f": 0.5}
    rho = discrepancy_ratios(q)
    assert rho["v"] == pytest.approx(0.9 / 0.4)
    sigma = discrepancy_ratios(q, inverse=True)
    assert sigma["a"] == pytest.approx(0.7 / 0.3)
    G = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    signals = {m: {"cls": v, "dom": 0.5} for m, v in q.items()}
    _, report = apply(gs.GMP(eps=0.0), signals, v=G, a=G, f=G)
    assert report.blocks["v"].details["k"] == pytest.approx(1 - math.tanh(0.5 * 0.9 / 0.4))
    assert report.blocks["a"].details["k"] == 1.0


def test_one_modality_uses_unit_ratios_and_the_tie_rule() -> None:
    method = gs.GMP()
    G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    out = method(G, objectives=["cls", "dom"])  # no signals needed with one modality
    torch.testing.assert_close(out, torch.tensor([-0.5, 1.5], dtype=torch.float64))
    assert method.last_report.blocks["block"].details["projected_task"] == "cls"


def test_single_source_domain_has_no_domain_objective() -> None:
    G = {"v": torch.tensor([[2.0, 1.0]]), "a": torch.tensor([[1.0, -1.0]])}
    t = gs.GradientTable.from_matrices(G, ["cls"])
    updates, report = gs.GMP(eps=0.0).apply(t, {"v": {"cls": 0.8}, "a": {"cls": 0.4}})
    torch.testing.assert_close(updates["v"], K1 * G["v"][0])
    torch.testing.assert_close(updates["a"], G["a"][0])
    assert report.blocks["v"].details["p"] == 1.0
    assert report.blocks["v"].details["projected_task"] is None


def test_zero_gradient_never_divides_by_zero() -> None:
    G = torch.tensor([[0.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    signals = {"v": {"cls": 0.9, "dom": 0.1}, "a": {"cls": 0.1, "dom": 0.9}}
    updates, report = apply(gs.GMP(), signals, v=G, a=G.flip(0))
    assert all(torch.isfinite(u).all() for u in updates.values())
    assert not report.blocks["v"].details["conflict"]


ABLATION_G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
ABLATION_SIGNALS = {"v": {"cls": 0.8, "dom": 0.2}, "a": {"cls": 0.4, "dom": 0.6}}
# v: ρ = 2, σ = 3, Γ = ⅔ < 1 → CAGP projects dom. k = 1 − tanh(1), p = 1 − tanh(1.5).
KV, PV = 1 - math.tanh(1.0), 1 - math.tanh(1.5)


@pytest.mark.parametrize(
    ("kwargs", "k", "p", "task"),
    [
        ({}, KV, PV, "dom"),
        ({"projection": "none"}, KV, PV, None),
        ({"modulation": "none"}, 1.0, 1.0, "dom"),
        ({"modulation": "unified"}, KV, KV, "dom"),
        ({"modulation": "without_k"}, 1.0, PV, "dom"),
        ({"modulation": "without_p"}, KV, 1.0, "dom"),
        ({"projection": "always_cls"}, KV, PV, "cls"),
        ({"projection": "always_dom"}, KV, PV, "dom"),
        ({"projection": "symmetric"}, KV, PV, "both"),
        ({"projection": "reverse"}, KV, PV, "cls"),
    ],
)
def test_table4_ablation_switches(kwargs: dict, k: float, p: float, task: str | None) -> None:
    updates, report = apply(gs.GMP(eps=0.0, **kwargs), ABLATION_SIGNALS, v=ABLATION_G, a=ABLATION_G)
    d = report.blocks["v"].details
    assert d["k"] == pytest.approx(k) and d["p"] == pytest.approx(p)
    assert d["projected_task"] == task
    hat_c, hat_d = k * ABLATION_G[0], p * ABLATION_G[1]

    def rej(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a - (a @ b) / (b @ b) * b

    expected = {
        None: hat_c + hat_d,
        "cls": rej(hat_c, hat_d) + hat_d,
        "dom": hat_c + rej(hat_d, hat_c),
        "both": rej(hat_c, hat_d) + rej(hat_d, hat_c),
    }[task]
    torch.testing.assert_close(updates["v"], expected)


def test_continuous_coefficient_form() -> None:
    _, report = apply(
        gs.GMP(eps=0.0, coefficient="continuous"), ABLATION_SIGNALS, v=ABLATION_G, a=ABLATION_G
    )
    assert report.blocks["v"].details["k"] == pytest.approx(1 - math.tanh(0.5 * 1.0))


@pytest.mark.parametrize(
    ("signals", "message"),
    [
        (None, "'semantic confidence' for block 'v', objective 'cls' is missing"),
        (
            {"v": {"cls": 0.5}, "a": {"cls": 0.5, "dom": 0.5}},
            "'domain confidence' for block 'v', objective 'dom' is missing",
        ),
        ({"v": {"cls": float("nan"), "dom": 0.5}, "a": {"cls": 0.5, "dom": 0.5}}, "not finite"),
        ({"v": {"cls": 1.2, "dom": 0.5}, "a": {"cls": 0.5, "dom": 0.5}}, "outside"),
    ],
)
def test_bad_signals(signals, message: str) -> None:
    with pytest.raises(gs.SignalError, match=message):
        apply(gs.GMP(), signals, v=ABLATION_G, a=ABLATION_G)


def test_bad_objectives_and_hyperparameters() -> None:
    t = gs.GradientTable.from_matrices({"v": ABLATION_G}, ["cls", "aux"])
    with pytest.raises(ValueError, match=r"unknown: \['aux'\]"):
        gs.GMP().apply(t, None)
    t = gs.GradientTable.from_matrices({"v": ABLATION_G}, ["dom", "other"])
    with pytest.raises(ValueError, match="GMP expects objectives 'cls'"):
        gs.GMP().apply(t, None)
    # Custom objective names behave exactly as the defaults do (one modality: tie → cls).
    custom = gs.GMP(cls="task", dom="adv")
    out = custom(ABLATION_G, objectives=["task", "adv"])
    torch.testing.assert_close(out, gs.GMP()(ABLATION_G, objectives=["cls", "dom"]))
    assert custom.last_report.blocks["block"].projected == ("task",)
    with pytest.raises(ValueError, match="modulation must be one of"):
        gs.GMP(modulation="both")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alpha_k"):
        gs.GMP(alpha_k=-1)
    with pytest.raises(ValueError, match="different objective names"):
        gs.GMP(cls="x", dom="x")
