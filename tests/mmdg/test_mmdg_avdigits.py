"""AV-Digits-DG: the shipped dataset, its property, and the generator's pieces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from mmdg.data_builders.avdigits import (
    AVDigitsConfig,
    log_mel,
    main,
    mel_filterbank,
    place_in_window,
)
from mmdg.features import load_dg_splits, load_split, read_meta

#: The builders' tests (and the shipped sets' properties) run in the slow suite.
pytestmark = pytest.mark.slow

SHIPPED = Path(__file__).resolve().parents[2] / "examples" / "mmdg" / "data" / "av-digits-dg"


def test_shipped_dataset_has_the_declared_layout() -> None:
    meta = read_meta(SHIPPED)
    assert meta.name == "av-digits-dg"
    assert meta.domains == ("en", "de", "fr", "es")
    assert meta.classes == tuple("0123456789")
    assert meta.modalities["audio"].shape == (40, 48)
    assert meta.modalities["vision"].shape == (16, 16)
    assert {m.dtype for m in meta.modalities.values()} == {"float16"}
    assert meta.target_splits == ("train", "test")
    params = meta.extra["generator"]["params"]
    assert (
        AVDigitsConfig(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
        ).seed
        == 0
    )
    split = load_split(SHIPPED, meta.domains, meta.splits)
    per_class = params["pairs_per_class"]
    assert len(split) == 10 * per_class * len(meta.domains)
    assert torch.bincount(split.label).tolist() == [per_class * 4] * 10
    assert split.features["audio"].shape[1:] == (40, 48)
    quantum = params["quantum"]
    assert torch.all(
        split.features["vision"] / quantum == torch.round(split.features["vision"] / quantum)
    )
    total = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert total <= 5_000_000


def _probe(train, evals, modality: str) -> list[float]:
    """Fits a small MLP on one modality of ``train``; returns its accuracy on ``evals``."""
    torch.manual_seed(0)
    x = train.features[modality].flatten(1)
    model = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
    )
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(6):
        for batch in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[batch]), train.label[batch]).backward()
            opt.step()
    with torch.no_grad():
        return [
            float((model(s.features[modality].flatten(1)).argmax(1) == s.label).float().mean())
            for s in evals
        ]


def test_shipped_audio_is_strong_but_domain_specific() -> None:
    """The premise of the benchmark, on one held-out language (German).

    Measured with this probe: audio 0.74 on the sources' test split and 0.11 on German; vision
    0.59 and 0.54.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is faster and immune to busy CPUs
    try:
        splits = load_dg_splits(SHIPPED, "de")
        audio_val, audio_tgt = _probe(splits.train, [splits.val, splits.test], "audio")
        vision_val, vision_tgt = _probe(splits.train, [splits.val, splits.test], "vision")
    finally:
        torch.set_num_threads(threads)
    assert audio_val > vision_val + 0.05
    assert audio_tgt < vision_tgt - 0.2


def test_mel_filterbank_covers_the_spectrum() -> None:
    bank = mel_filterbank(16000, 512, 40)
    assert bank.shape == (40, 257)
    assert bank.min() >= 0
    assert np.all(bank.max(axis=1) > 0.5)  # every band has a peak
    assert np.argmax(bank[0]) < np.argmax(bank[-1])


def test_window_and_log_mel_shapes() -> None:
    cfg = AVDigitsConfig()
    rng = np.random.default_rng(0)
    word = np.sin(np.arange(6000) / 5.0).astype(np.float32)
    x = place_in_window(word, rng, cfg)
    assert x.shape == (16000,)
    assert place_in_window(np.ones(20000, np.float32), rng, cfg).shape == (16000,)
    spec = log_mel(x, cfg)
    assert spec.shape == (40, 48)
    assert spec.dtype == np.float32
    assert abs(spec.mean()) < 1e-4
    assert spec.std() == pytest.approx(1.0, abs=1e-3)


def test_style_image_is_seeded() -> None:
    pytest.importorskip("scipy")
    from mmdg.data_builders.avdigits import DOMAINS, style_image

    cfg = AVDigitsConfig()
    digit = np.zeros((8, 8))
    digit[2:6, 3] = 1.0
    a = style_image(digit, DOMAINS["es"][1], np.random.default_rng(1), cfg)
    b = style_image(digit, DOMAINS["es"][1], np.random.default_rng(1), cfg)
    assert a.shape == (16, 16)
    np.testing.assert_array_equal(a, b)


def test_config_and_cli_validation() -> None:
    with pytest.raises(ValueError, match="unknown domains"):
        AVDigitsConfig(domains=("xx",))
    with pytest.raises(SystemExit):
        main(["--out", "unused", "--pairs", "45"])


def test_build_is_deterministic(tmp_path: Path) -> None:
    """Needs the optional generator dependencies; a tiny build, twice, gives equal files."""
    pytest.importorskip("espeakng_loader")
    pytest.importorskip("sklearn")
    args = ["--seed", "5", "--pairs", "40", "--domains", "en", "fr", "--workers", "2"]
    assert main(["--out", str(tmp_path / "a"), *args]) == 0
    assert main(["--out", str(tmp_path / "b"), "--workers", "1", *args[:-2]]) == 0
    for name in ("en/train.npz", "fr/test.npz"):
        with np.load(tmp_path / "a" / name) as a, np.load(tmp_path / "b" / name) as b:
            assert a.files == b.files
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key])
    split = load_split(tmp_path / "a", ["en", "fr"], ["train", "test"])
    assert len(split) == 40
    assert split.features["audio"].shape == (40, 40, 48)
