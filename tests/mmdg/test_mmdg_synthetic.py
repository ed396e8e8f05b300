"""Synthetic MMDG generator: determinism and what each knob does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mmdg.data_builders.synthetic import make_synthetic_mmdg, write_synthetic_dataset
from mmdg.features import load_dg_splits, read_meta

SMALL = {"dims": (12, 6), "n_domains": 3, "n_classes": 4, "n_per_domain": 40, "latent": 4}


def _arrays(synth) -> list[np.ndarray]:
    return [synth.data[d][k] for d in synth.domains for k in sorted(synth.data[d])]


def test_same_seed_same_data_other_seed_other_data() -> None:
    a, b = make_synthetic_mmdg(**SMALL, seed=3), make_synthetic_mmdg(**SMALL, seed=3)
    for x, y in zip(_arrays(a), _arrays(b), strict=True):
        np.testing.assert_array_equal(x, y)
    c = make_synthetic_mmdg(**SMALL, seed=4)
    assert not np.array_equal(a.data["d0"]["m1"], c.data["d0"]["m1"])
    gen = make_synthetic_mmdg(**SMALL, seed=np.random.default_rng(3))
    np.testing.assert_array_equal(gen.data["d2"]["m2"], a.data["d2"]["m2"])


def test_shapes_names_and_dtypes() -> None:
    s = make_synthetic_mmdg(**SMALL, modalities=("video", "audio"))
    assert s.domains == ("d0", "d1", "d2")
    assert s.modalities == ("video", "audio")
    assert s.data["d1"]["video"].shape == (40, 12)
    assert s.data["d1"]["audio"].dtype == np.float32
    assert s.data["d1"]["label"].dtype == np.int64
    assert s.data["d1"]["label"].max() < 4
    assert s.class_means["d0"]["audio"].shape == (4, 6)


def test_noise_zero_puts_samples_on_class_means() -> None:
    s = make_synthetic_mmdg(**SMALL, noise=0.0)
    for d in s.domains:
        y = s.data[d]["label"]
        np.testing.assert_allclose(s.data[d]["m1"], s.class_means[d]["m1"][y], atol=1e-5)


def test_noise_scales_within_class_spread() -> None:
    base = make_synthetic_mmdg(**SMALL, noise=1.0, seed=1)
    loud = make_synthetic_mmdg(**SMALL, noise=3.0, seed=1)
    y = base.data["d0"]["label"]
    res = [(s.data["d0"]["m2"] - s.class_means["d0"]["m2"][y]).std() for s in (base, loud)]
    assert res[1] == pytest.approx(3 * res[0], rel=1e-5)


def _centred_means(s, domain: str, m: str) -> np.ndarray:
    means = s.class_means[domain][m]
    return means - means.mean(axis=0)  # removes the class-independent domain offset


def test_specificity_zero_shares_the_class_cue_and_one_redraws_it() -> None:
    shared = make_synthetic_mmdg(**SMALL, specificity=0.0, seed=2)
    np.testing.assert_allclose(
        _centred_means(shared, "d0", "m1"), _centred_means(shared, "d2", "m1"), atol=1e-5
    )
    private = make_synthetic_mmdg(**SMALL, specificity=1.0, seed=2)
    a, b = _centred_means(private, "d0", "m1"), _centred_means(private, "d2", "m1")
    assert np.abs(a - b).max() > 0.5


def test_signal_sets_the_norm_of_the_class_cue() -> None:
    s = make_synthetic_mmdg(**SMALL, signal=(5.0, 2.0), offset=0.0, seed=0)
    for m, norm in (("m1", 5.0), ("m2", 2.0)):
        np.testing.assert_allclose(np.linalg.norm(s.class_means["d1"][m], axis=1), norm, rtol=1e-5)


def test_offset_moves_domains_apart_only_when_positive() -> None:
    def gap(offset: float) -> float:
        s = make_synthetic_mmdg(**SMALL, offset=offset, specificity=0.0, seed=5)
        return float(np.abs(s.class_means["d0"]["m2"] - s.class_means["d1"]["m2"]).max())

    assert gap(0.0) < 1e-5
    assert gap(1.0) > 0.1


def test_knobs_do_not_change_the_random_draws() -> None:
    a = make_synthetic_mmdg(**SMALL, signal=1.0, seed=7)
    b = make_synthetic_mmdg(**SMALL, signal=4.0, seed=7)
    np.testing.assert_array_equal(a.data["d1"]["label"], b.data["d1"]["label"])


def test_strong_specific_modality_does_not_transfer() -> None:
    """Nearest (domain, class) centroid: m1 wins on the sources, m2 on a new domain."""
    s = make_synthetic_mmdg(
        n_domains=3,
        n_classes=5,
        n_per_domain=300,
        dims=(32, 32),
        latent=8,
        signal=(8.0, 2.0),
        specificity=(0.95, 0.0),
        seed=0,
    )
    sources = ("d0", "d1")

    def centre(x: np.ndarray) -> np.ndarray:
        return x - x.mean(0)  # removes the domain offset

    def accuracy(m: str, domain: str, rows: slice) -> float:
        centroids = np.concatenate(
            [
                np.stack(
                    [
                        centre(s.data[d][m])[:200][s.data[d]["label"][:200] == c].mean(0)
                        for c in range(5)
                    ]
                )
                for d in sources
            ]
        )
        x, y = centre(s.data[domain][m])[rows], s.data[domain]["label"][rows]
        nearest = np.argmin(((x[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
        return float((nearest % 5 == y).mean())

    src = {m: np.mean([accuracy(m, d, slice(200, None)) for d in sources]) for m in ("m1", "m2")}
    tgt = {m: accuracy(m, "d2", slice(None)) for m in ("m1", "m2")}
    assert src["m1"] > src["m2"] + 0.1, src
    assert tgt["m1"] + 0.1 < tgt["m2"], tgt


def test_bad_knobs_are_rejected() -> None:
    with pytest.raises(ValueError, match="specificity"):
        make_synthetic_mmdg(**SMALL, specificity=1.5)
    with pytest.raises(ValueError, match="one value per modality"):
        make_synthetic_mmdg(**SMALL, signal=(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="latent"):
        make_synthetic_mmdg(dims=(4,), latent=8)


def test_written_dataset_loads_and_records_the_knobs(tmp_path: Path) -> None:
    root = write_synthetic_dataset(
        tmp_path,
        **SMALL,
        modalities=("video", "audio"),
        test_fraction=0.25,
        seed=9,
        dtype="float16",
    )
    meta = read_meta(root)
    assert meta.domains == ("d0", "d1", "d2")
    assert meta.classes == ("0", "1", "2", "3")
    assert meta.modalities["video"].shape == (12,)
    assert meta.modalities["audio"].dtype == "float16"
    assert meta.extra["generator"]["seed"] == 9
    assert meta.extra["generator"]["dims"] == [12, 6]
    splits = load_dg_splits(root, "d0")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (60, 20, 10)
    direct = make_synthetic_mmdg(**SMALL, modalities=("video", "audio"), seed=9)
    np.testing.assert_array_equal(splits.test.label.numpy(), direct.data["d0"]["label"][30:])
