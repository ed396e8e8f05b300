"""PMR: the spec's vector (§6.3) end to end from prototypes, the switch and its window."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import gradsurgery as gs
from gradsurgery.methods.pmr import PMR, pmr_weaker
from gradsurgery.signals import prototype_confidences

OBJECTIVES = ["mm", "proto_a", "proto_v"]
# Encoder blocks: L_mm reaches both, PCE_m only its own encoder.
ROWS = {
    "a": torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 0.0]], dtype=torch.float64),
    "v": torch.tensor([[0.0, 2.0, 1.0], [0.0, 0.0, 0.0], [1.0, -1.0, 3.0]], dtype=torch.float64),
}


def apply(method: PMR, signals: dict):
    return method.apply(gs.GradientTable.from_matrices(ROWS, OBJECTIVES), signals)


def test_spec_vector() -> None:
    # Prototypes I₂ for both modalities; ρ = Σp^a / Σp^v = 1.3357 > 1 → only v is stimulated.
    eye = torch.eye(2)
    signals = prototype_confidences(
        {"a": torch.eye(2), "v": torch.tensor([[0.5, 0.0], [0.0, 0.2]])},
        {"a": eye, "v": eye},
        torch.tensor([0, 1]),
    )
    updates, report = apply(PMR(alpha=0.6), signals)
    want = torch.tensor([1.0, 0.0, 0.6], dtype=torch.float64)
    for m in ROWS:
        torch.testing.assert_close(report.blocks[m].weights, want)
        torch.testing.assert_close(updates[m], want @ ROWS[m])
    details = report.blocks["a"].details
    assert details["weaker"] == ["v"]
    assert details["ratio"]["a"] == pytest.approx(1.3357, abs=1e-4)
    assert details["prototype_objectives"] == {"a": "proto_a", "v": "proto_v"}


def test_tie_stimulates_nobody_and_the_window_switches_off() -> None:
    _, report = apply(PMR(), {"a": {"proto_a": 0.5}, "v": {"proto_v": 0.5}})
    torch.testing.assert_close(report.blocks["a"].weights, torch.tensor([1.0, 0, 0]).double())
    method = PMR(start_epoch=1, end_epoch=2)
    signals = {"a": {"proto_a": 0.9}, "v": {"proto_v": 0.3}}
    _, report = apply(method, signals)
    assert report.blocks["v"].details["active"] is False
    torch.testing.assert_close(report.blocks["v"].weights, torch.tensor([1.0, 0, 0]).double())
    method.set_epoch(1)
    _, report = apply(method, signals)
    torch.testing.assert_close(report.blocks["v"].weights, torch.tensor([1.0, 0, 1]).double())


def test_three_modalities_weaker_than_the_mean_of_the_others() -> None:
    # ρ_a = 0.9/0.45 = 2, ρ_v = 0.5/0.65 < 1, ρ_t = 0.4/0.7 < 1: v and t are stimulated.
    weaker, ratios = pmr_weaker({"a": 0.9, "v": 0.5, "t": 0.4})
    assert weaker == ["v", "t"]
    assert ratios["a"] == pytest.approx(2.0)
    assert pmr_weaker({"a": 0.7}) == ([], {"a": 1.0})


@given(
    pa=st.floats(0.01, 1.0), pv=st.floats(0.01, 1.0), alpha=st.floats(0.0, 2.0), seed=st.integers()
)
def test_only_the_less_confident_modality_gets_its_prototype_loss(
    pa: float, pv: float, alpha: float, seed: int
) -> None:
    # The defining property (two modalities): the update of every block is
    # g_mm + α·g_PCE(weaker), where weaker is the strictly less confident modality.
    gen = torch.Generator().manual_seed(seed % 2**32)
    rows = {m: torch.randn(3, 4, generator=gen, dtype=torch.float64) for m in ("a", "v")}
    table = gs.GradientTable.from_matrices(rows, OBJECTIVES)
    updates, _ = PMR(alpha=alpha).apply(table, {"a": {"proto_a": pa}, "v": {"proto_v": pv}})
    beta_a = alpha if pa < pv else 0.0
    beta_v = alpha if pv < pa else 0.0
    for m, G in rows.items():
        torch.testing.assert_close(updates[m], G[0] + beta_a * G[1] + beta_v * G[2])


def test_signal_errors() -> None:
    with pytest.raises(gs.SignalError, match="PMR needs signals"):
        apply(PMR(), None)  # type: ignore[arg-type]
    with pytest.raises(gs.SignalError, match="not among the objectives"):
        apply(PMR(), {"a": {"proto_x": 0.5}})
    with pytest.raises(gs.SignalError, match="exactly one entry"):
        apply(PMR(), {"a": {"proto_a": 0.5, "proto_v": 0.4}})
    with pytest.raises(gs.SignalError, match="prototype loss of both"):
        apply(PMR(), {"a": {"proto_a": 0.5}, "v": {"proto_a": 0.4}})
    with pytest.raises(gs.SignalError, match="outside"):
        apply(PMR(), {"a": {"proto_a": 1.5}})


def test_state_round_trip() -> None:
    method = PMR(end_epoch=3)
    method.set_epoch(7)
    other = PMR(end_epoch=3)
    other.load_state_dict(method.state_dict())
    assert other.epoch == 7 and not other.active
    other.reset()
    assert other.epoch == 0 and other.active
