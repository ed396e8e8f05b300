"""OGM-GE: hand-derived vectors, window, noise statistics and state."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import matrices
from hypothesis import given
from hypothesis import strategies as st

import gradsurgery as gs

SIGNALS = {"audio": {"loss": 0.9}, "visual": {"loss": 0.3}}


def grads(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {m: torch.randn(1, 6, generator=gen, dtype=torch.float64) for m in SIGNALS}


def apply(method: gs.OGMGE, G: dict, signals: dict = SIGNALS):
    return method.apply(gs.GradientTable.from_matrices(G, ["loss"]), signals)


def test_vector_dominant_modality_is_scaled() -> None:
    # ρ_audio = 0.9 / 0.3 = 3 → k = 1 − tanh(0.1 · 3); ρ_visual = ⅓ → k = 1.
    G = grads()
    updates, report = apply(gs.OGMGE(ge=False, eps=0.0), G)
    k = 1 - math.tanh(0.3)
    torch.testing.assert_close(updates["audio"], k * G["audio"][0])
    torch.testing.assert_close(updates["visual"], G["visual"][0], rtol=0, atol=0)
    assert report.blocks["audio"].details["rho"] == pytest.approx(3.0)
    assert report.blocks["visual"].details["k"] == 1.0


def test_continuous_form() -> None:
    _, report = apply(gs.OGMGE(ge=False, eps=0.0, coefficient="continuous", alpha=0.5), grads())
    assert report.blocks["audio"].details["k"] == pytest.approx(1 - math.tanh(0.5 * 2.0))


@given(q=st.floats(0.01, 1.0), r=st.floats(0.01, 1.0))
def test_at_most_one_modality_is_suppressed(q: float, r: float) -> None:
    _, report = apply(
        gs.OGMGE(ge=False, eps=0.0), grads(), {"audio": {"loss": q}, "visual": {"loss": r}}
    )
    ks = [report.blocks[m].details["k"] for m in SIGNALS]
    assert all(0 < k <= 1 for k in ks)
    assert sum(k < 1 for k in ks) <= 1


def test_epoch_and_step_window() -> None:
    method = gs.OGMGE(start_epoch=1, end_epoch=2, ge=True)
    G = grads()
    for epoch, active in [(0, False), (1, True), (2, True), (3, False)]:
        method.set_epoch(epoch)
        updates, report = apply(method, G)
        assert report.blocks["audio"].details["active"] is active
        if not active:
            for m in G:
                torch.testing.assert_close(updates[m], G[m][0], rtol=0, atol=0)
            assert not report.changed
    stepped = gs.OGMGE(start_step=2, end_step=3, ge=False)
    flags = [apply(stepped, G)[1].blocks["audio"].details["active"] for _ in range(5)]
    assert flags == [False, False, True, True, False]


def test_generalization_enhancement_noise_statistics() -> None:
    gen = torch.Generator().manual_seed(0)
    G = {
        "audio": 3.0 * torch.randn(1, 200_000, generator=gen),
        "visual": torch.randn(1, 200_000, generator=gen),
    }
    method = gs.OGMGE(eps=0.0)
    updates, report = apply(method, G)
    for m in G:
        k = report.blocks[m].details["k"]
        noise = updates[m] - k * G[m][0]
        assert float(noise.mean()) == pytest.approx(0.0, abs=0.02 * float(G[m].std()))
        assert float(noise.std()) == pytest.approx(float(G[m].std()), rel=0.02)
        assert report.blocks[m].changed
    # Same seed, same noise; another seed, other noise.
    again, _ = apply(gs.OGMGE(eps=0.0), G)
    other, _ = apply(gs.OGMGE(eps=0.0, seed=1), G)
    torch.testing.assert_close(again["audio"], updates["audio"], rtol=0, atol=0)
    assert not torch.equal(other["audio"], updates["audio"])


def test_noise_is_per_tensor_and_zero_for_zero_gradients() -> None:
    a = torch.nn.Linear(3, 4)
    x = torch.randn(8, 3)
    frozen_like = torch.nn.Parameter(torch.zeros(1))
    loss = a(x).pow(2).mean() + 0 * frozen_like.sum()
    report = gs.backward({"loss": loss}, {"audio": [*a.parameters(), frozen_like]}, gs.OGMGE())
    stds = report.blocks["audio"].details["noise_std"]
    assert len(stds) == 3 and stds[2] == 0.0
    assert float(frozen_like.grad.abs().sum()) == 0.0


@given(G=matrices(k=1), c=st.floats(0.01, 100.0))
def test_noise_is_positively_homogeneous_for_a_fixed_seed(G: torch.Tensor, c: float) -> None:
    a = gs.OGMGE()(G)
    b = gs.OGMGE()(c * G)
    torch.testing.assert_close(b, c * a, rtol=1e-6, atol=1e-9 * c)


def test_state_dict_keeps_epoch_step_and_generator() -> None:
    first = gs.OGMGE()
    first.set_epoch(7)
    apply(first, grads())
    second = gs.OGMGE()
    second.load_state_dict(first.state_dict())
    assert (second.epoch, second.step) == (7, 1)
    a, _ = apply(first, grads(1))
    b, _ = apply(second, grads(1))
    torch.testing.assert_close(a["audio"], b["audio"], rtol=0, atol=0)
    first.reset()
    assert (first.epoch, first.step) == (0, 0)


def test_errors() -> None:
    with pytest.raises(ValueError, match="takes exactly 1 objective"):
        gs.OGMGE().apply(gs.GradientTable.from_matrices({"a": torch.ones(2, 3)}), None)
    with pytest.raises(gs.SignalError, match="block 'visual', objective 'loss' is missing"):
        apply(gs.OGMGE(), grads(), {"audio": {"loss": 0.5}})
    with pytest.raises(ValueError, match="end_epoch"):
        gs.OGMGE(start_epoch=3, end_epoch=1)
    with pytest.raises(ValueError, match="alpha"):
        gs.OGMGE(alpha=float("inf"))


def test_cuda_noise_is_drawn_on_the_device_and_seeded() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    G = {m: torch.randn(1, 1000, device="cuda") for m in SIGNALS}
    a, _ = apply(gs.OGMGE(), G)
    b, _ = apply(gs.OGMGE(), G)
    assert a["audio"].device.type == "cuda"
    torch.testing.assert_close(a["audio"], b["audio"], rtol=0, atol=0)


def test_rejects_a_device_generator() -> None:
    class FakeCuda(torch.Generator):
        device = torch.device("meta")

    with pytest.raises(ValueError, match="CPU generator"):
        gs.OGMGE(generator=FakeCuda())
