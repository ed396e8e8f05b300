"""Feature layout v1: round trip, multi-view, masks, protocol helpers and bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mmdg.data_builders.synthetic import make_synthetic_mmdg, synthetic_feature_data
from mmdg.features import (
    FeatureFormatError,
    FeatureMeta,
    ModalitySpec,
    leave_one_domain_out,
    load_dg_splits,
    load_split,
    read_meta,
    write_feature_dataset,
)

DOMAINS = ("d0", "d1", "d2")


def _meta(**changes: object) -> FeatureMeta:
    fields = {
        "name": "fake",
        "classes": ("a", "b", "c"),
        "domains": DOMAINS,
        "modalities": {
            "video": ModalitySpec((8,), "float32"),
            "audio": ModalitySpec((4,), "float16"),
        },
    }
    fields.update(changes)
    return FeatureMeta(**fields)  # type: ignore[arg-type]


def _data(seed: int = 0) -> dict:
    synth = make_synthetic_mmdg(
        dims=(8, 4),
        modalities=("video", "audio"),
        n_domains=3,
        n_classes=3,
        n_per_domain=24,
        latent=4,
        seed=seed,
    )
    return synthetic_feature_data(synth, test_fraction=0.5)


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    """3 domains x {train, test} x 12 rows, modalities video [8] and audio [4]."""
    return write_feature_dataset(tmp_path / "fake", _meta(), _data())


def _rewrite(root: Path, domain: str, split: str, **arrays: np.ndarray) -> Path:
    """Replaces keys of one npz file with raw arrays, bypassing the writer's checks."""
    path = root / domain / f"{split}.npz"
    with np.load(path) as npz:
        content = {k: npz[k] for k in npz.files}
    content.update(arrays)
    np.savez_compressed(path, **content)
    return path


def test_round_trip_keeps_values_order_and_ids(fake: Path) -> None:
    data = _data()
    split = load_split(fake, ["d1", "d0"], ["train", "test"])
    expected = [data[d][s] for d in ("d1", "d0") for s in ("train", "test")]
    assert len(split) == 48
    assert split.sample_id == [i for part in expected for i in part["sample_id"]]
    np.testing.assert_array_equal(
        split.label.numpy(), np.concatenate([p["label"] for p in expected])
    )
    np.testing.assert_array_equal(
        split.features["video"].numpy(), np.concatenate([p["video"] for p in expected])
    )
    audio = np.concatenate([p["audio"] for p in expected]).astype(np.float16)
    np.testing.assert_array_equal(split.features["audio"].numpy(), audio.astype(np.float32))
    assert split.features["audio"].dtype == torch.float32
    assert split.domain.tolist() == [0] * 24 + [1] * 24  # index in the requested list
    assert split.domains == ("d1", "d0")
    assert split.classes == ("a", "b", "c")
    assert all(m.all() for m in split.mask.values())


def test_meta_round_trip_and_on_disk_types(fake: Path) -> None:
    assert read_meta(fake) == _meta()
    with np.load(fake / "d0" / "train.npz", allow_pickle=False) as npz:
        assert npz["label"].dtype == np.int64
        assert npz["sample_id"].dtype.kind == "U"
        assert npz["audio"].dtype == np.float16
        assert npz["video"].dtype == np.float32


def test_dg_splits_follow_the_protocol(fake: Path) -> None:
    meta = read_meta(fake)
    assert leave_one_domain_out(meta.domains) == [
        (("d1", "d2"), "d0"),
        (("d0", "d2"), "d1"),
        (("d0", "d1"), "d2"),
    ]
    splits = load_dg_splits(fake, "d1", modalities=["audio"])
    assert splits.sources == ("d0", "d2")
    assert splits.target == "d1"
    assert (len(splits.train), len(splits.val), len(splits.test)) == (24, 24, 12)
    assert all(i.startswith(("d0", "d2")) for i in splits.train.sample_id)
    assert splits.test.sample_id == [f"d1-{i}" for i in range(12, 24)]
    assert splits.test.domain.eq(0).all()
    assert list(splits.train.features) == ["audio"]
    with pytest.raises(ValueError, match="also a source"):
        load_dg_splits(fake, "d1", sources=["d0", "d1"])


def test_target_splits_are_read_from_meta(tmp_path: Path) -> None:
    root = write_feature_dataset(tmp_path, _meta(target_splits=("train", "test")), _data())
    assert len(load_dg_splits(root, "d2").test) == 24


def test_subset_by_index_and_mask(fake: Path) -> None:
    split = load_split(fake, DOMAINS, "train")
    sub = split.subset(split.label == 0)
    assert len(sub) == int((split.label == 0).sum())
    assert sub.label.eq(0).all()
    assert split.subset([3, 1]).sample_id == [split.sample_id[3], split.sample_id[1]]


def test_multiview_is_averaged_and_masks_are_loaded(tmp_path: Path) -> None:
    meta = _meta(modalities={"video": ModalitySpec((3, 2), "float32", multiview=True)})
    rng = np.random.default_rng(0)
    data = {
        d: {
            s: {
                "label": np.arange(4) % 3,
                "sample_id": np.array([f"{d}{s}{i}" for i in range(4)]),
                "video": rng.standard_normal((4, 3, 2)),
                "mask_video": np.array([True, False, True, True]),
            }
            for s in ("train", "test")
        }
        for d in DOMAINS
    }
    root = write_feature_dataset(tmp_path, meta, data)
    split = load_split(root, "d0", "train")
    np.testing.assert_allclose(
        split.features["video"].numpy(),
        data["d0"]["train"]["video"].astype(np.float32).mean(axis=1),
        rtol=1e-6,
    )
    assert split.mask["video"].tolist() == [True, False, True, True]
    assert load_split(root, "d0", "train", views="all").features["video"].shape == (4, 3, 2)
    assert json.loads((root / "meta.json").read_text())["modalities"]["video"]["multiview"]


# ------------------------------------------------------------------------------------------
# negative fixtures: each error names the file, the key and what is wrong


def test_wrong_row_count(fake: Path) -> None:
    path = _rewrite(fake, "d1", "train", audio=np.zeros((11, 4), np.float16))
    with pytest.raises(
        FeatureFormatError, match=r"'audio' has shape \(11, 4\), expected \(12, 4\)"
    ) as err:
        load_split(fake, "d1", "train")
    assert str(path) in str(err.value)
    assert "domain 'd1'" in str(err.value)


def test_sample_id_row_count(fake: Path) -> None:
    _rewrite(fake, "d0", "test", sample_id=np.array(["x", "y"]))
    with pytest.raises(FeatureFormatError, match="'sample_id' has 2 rows, expected 12"):
        load_split(fake, "d0", "test")


def test_label_out_of_range(fake: Path) -> None:
    labels = np.zeros(12, np.int64)
    labels[5] = 3
    path = _rewrite(fake, "d2", "test", label=labels)
    with pytest.raises(
        FeatureFormatError, match=r"'label' has 1 value\(s\) out of range \[0, 3\)"
    ) as err:
        load_dg_splits(fake, "d2")
    assert str(path) in str(err.value)


def test_pickled_object_array(fake: Path) -> None:
    path = fake / "d0" / "train.npz"
    with np.load(path) as npz:
        content = {k: npz[k] for k in npz.files}
    content["sample_id"] = np.array([f"s{i}" for i in range(12)], dtype=object)
    np.savez(path, **content)  # stores the object array pickled
    with pytest.raises(FeatureFormatError, match="'sample_id' holds a pickled object array") as err:
        load_split(fake, "d0", "train")
    assert str(path) in str(err.value)


def test_wrong_shape(fake: Path) -> None:
    _rewrite(fake, "d0", "train", video=np.zeros((12, 9), np.float32))
    with pytest.raises(
        FeatureFormatError, match=r"'video' has shape \(12, 9\), expected \(12, 8\)"
    ):
        load_split(fake, "d0", "train")


def test_wrong_dtype_and_non_finite(fake: Path) -> None:
    _rewrite(fake, "d0", "train", video=np.zeros((12, 8), np.float64))
    with pytest.raises(FeatureFormatError, match="'video' has dtype float64, declared float32"):
        load_split(fake, "d0", "train")
    bad = np.zeros((12, 8), np.float32)
    bad[0, 0] = np.nan
    _rewrite(fake, "d0", "train", video=bad)
    with pytest.raises(FeatureFormatError, match="'video' has non-finite values"):
        load_split(fake, "d0", "train")
    _rewrite(fake, "d0", "train", mask_video=np.arange(12) > 0)  # NaN row marked missing
    assert not load_split(fake, "d0", "train").mask["video"][0]


def test_missing_and_unknown_keys(fake: Path) -> None:
    path = fake / "d1" / "test.npz"
    with np.load(path) as npz:
        content = {k: npz[k] for k in npz.files if k != "audio"}
    np.savez_compressed(path, **content)
    with pytest.raises(FeatureFormatError, match="modality key 'audio' is missing"):
        load_split(fake, "d1", "test")
    _rewrite(fake, "d1", "test", audio=np.zeros((12, 4), np.float16), depth=np.zeros(12))
    with pytest.raises(FeatureFormatError, match=r"unknown keys \['depth'\]"):
        load_split(fake, "d1", "test")


def test_unknown_domain_split_and_modality(fake: Path) -> None:
    with pytest.raises(FeatureFormatError, match="unknown domain 'd9'") as err:
        load_split(fake, ["d0", "d9"], "train")
    assert "meta.json" in str(err.value)
    with pytest.raises(FeatureFormatError, match="unknown target domain 'd9'"):
        load_dg_splits(fake, "d9")
    with pytest.raises(FeatureFormatError, match="unknown split 'val'"):
        load_split(fake, "d0", "val")
    with pytest.raises(FeatureFormatError, match=r"unknown modalities \['depth'\]"):
        load_split(fake, "d0", "train", modalities=["depth"])


def test_missing_file(fake: Path) -> None:
    (fake / "d2" / "train.npz").unlink()
    with pytest.raises(FeatureFormatError, match=r"train\.npz: missing"):
        load_split(fake, "d2", "train")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 2}, "unsupported 'version' 2"),
        ({"format": "other"}, "'format' must be 'gradsurgery-mmdg-features'"),
        ({"domains": []}, "'domains' must be a non-empty list"),
        ({"classes": ["a", "a"]}, "'classes' has duplicate entries"),
        ({"target_splits": ["val"]}, r"'target_splits' \['val'\] are not in 'splits'"),
        ({"modalities": {"video": {"shape": [0]}}}, "'shape' must be a list of positive ints"),
        ({"modalities": {"video": {"shape": [8], "dtype": "int8"}}}, "'dtype' must be one of"),
        ({"modalities": {"label": {"shape": [8]}}}, "clash with reserved npz keys"),
    ],
)
def test_bad_meta(fake: Path, change: dict, message: str) -> None:
    path = fake / "meta.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(FeatureFormatError, match=message) as err:
        read_meta(fake)
    assert str(path) in str(err.value)


def test_meta_not_json(tmp_path: Path) -> None:
    (tmp_path / "meta.json").write_text("{")
    with pytest.raises(FeatureFormatError, match="not valid JSON"):
        read_meta(tmp_path)
    with pytest.raises(FeatureFormatError, match="missing"):
        read_meta(tmp_path / "nowhere")


def test_writer_rejects_bad_data_before_writing(tmp_path: Path) -> None:
    data = _data()
    data["d0"]["train"]["label"] = data["d0"]["train"]["label"] + 5
    with pytest.raises(FeatureFormatError, match=r"'label' has .* out of range"):
        write_feature_dataset(tmp_path / "out", _meta(), data)
    assert not (tmp_path / "out").exists()
    data = _data()
    del data["d1"]["test"]
    with pytest.raises(FeatureFormatError, match="no arrays for domain 'd1', split 'test'"):
        write_feature_dataset(tmp_path / "out", _meta(), data)
