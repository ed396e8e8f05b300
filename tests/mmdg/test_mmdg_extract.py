"""Feature extractor on tiny fake raw trees, with stub backbones and stub decoders."""

from __future__ import annotations

import csv
import math
import re
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from mmdg.extract import (
    AUDIO_SAMPLES,
    MediaReaders,
    audio_window,
    detect_epic_layout,
    epic_clips,
    extract_features,
    flow_span,
    hac_clips,
    log_spectrogram,
    parse_timestamp,
    sample_indices,
)
from mmdg.features import load_split, read_meta

COLUMNS = [
    "uid",
    "participant_id",
    "video_id",
    "narration",
    "start_timestamp",
    "stop_timestamp",
    "start_frame",
    "stop_frame",
    "verb",
    "verb_class",
]
# (domain, video, rgb frames on disk, rows: uid, start_frame, stop_frame, verb_class)
EPIC = {
    "D1": ("P08_01", 91, [(11, 0, 80, 2), (12, 5, 75, 0), (13, 61, 69, 7)]),
    "D2": ("P01_01", 61, [(21, 10, 50, 1), (22, 40, 80, 4), (23, 0, 30, 5)]),
}
RATE = 16000


def _write_wav(path: Path, seconds: float, seed: int) -> np.ndarray:
    samples = np.random.default_rng(seed).uniform(-0.5, 0.5, int(seconds * RATE)) * 32767
    samples = samples.astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(samples.tobytes())
    return samples / 32768.0


def _touch_frames(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"frame_{i:010d}.jpg").touch()


def _frame_number(path: Path) -> np.ndarray:
    """Stub JPEG decoder: a 4x4 RGB image whose pixels hold the frame number."""
    assert path.is_file(), path  # the extractor only asks for frames that exist
    return np.full((4, 4, 3), int(re.search(r"frame_(\d+)", path.name).group(1)), np.uint8)


def _fake_epic(root: Path) -> Path:
    splits = root / "MM-SADA_Domain_Adaptation_Splits"
    splits.mkdir(parents=True)
    for domain, (video, n_frames, rows) in EPIC.items():
        with (splits / f"{domain}_train.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            for k, (uid, start, stop, label) in enumerate(rows):
                writer.writerow(
                    [
                        uid,
                        video[:3],
                        video,
                        "x",
                        f"00:00:0{k}.50",
                        f"00:00:0{k + 1}.50",
                        start,
                        stop,
                        "x",
                        label,
                    ]
                )
        _touch_frames(root / "rgb" / "train" / domain / video, n_frames)
        for axis in "uv":
            _touch_frames(root / "flow" / "train" / domain / video / axis, n_frames // 2 + 1)
        _write_wav(root / "rgb" / "train" / domain / f"{video}.wav", 3.0, seed=len(domain))
    return root


def _video_ids(x: torch.Tensor) -> torch.Tensor:
    """Stub RGB backbone: the frame number of every sampled frame -> [1, T]."""
    assert x.shape[:2] == (1, 3)
    return (x[:, 0, :, 0, 0] * 255).round()


def _flow_ids(x: torch.Tensor) -> torch.Tensor:
    """Stub flow backbone: u and v frame numbers -> [1, 2 T]."""
    assert x.shape[:2] == (1, 2)
    return (x[:, :, :, 0, 0] * 255).round().flatten(1)


def _audio_stats(x: torch.Tensor) -> torch.Tensor:
    """Stub audio backbone: the spectrogram's shape, mean and std -> [1, 4]."""
    return torch.tensor([[x.shape[2], x.shape[3], x.mean(), x.std()]])


BACKBONES = {"video": _video_ids, "flow": _flow_ids, "audio": _audio_stats}


# ------------------------------------------------------------------------------------------
# pure pieces


def test_timestamps_and_flow_span() -> None:
    assert parse_timestamp("00:01:04.09") == pytest.approx(64.09)
    assert flow_span(5, 75) == (3, 38)
    assert flow_span(4, 80) == (2, 40)
    assert flow_span(61, 69)[0] == math.ceil(61 / 2)


def test_sample_indices_are_centred_loop_and_stay_in_range() -> None:
    idx = sample_indices(0, 80, 32, 2)
    assert idx.tolist() == list(range(8, 72, 2))  # (80 - 63) // 2 = 8
    short = sample_indices(10, 14, 6, 2)
    assert short.tolist() == [10, 12, 10, 12, 10, 12]
    assert sample_indices(40, 80, 32, 2, lo=0, hi=60).max() == 60


def test_audio_window_tiles_short_clips_to_ten_seconds() -> None:
    wav = np.linspace(-2.0, 2.0, 3 * RATE, dtype=np.float32)
    out = audio_window(wav, RATE, 0.5, 1.5)
    assert out.shape == (AUDIO_SAMPLES,)
    np.testing.assert_array_equal(out, np.clip(np.tile(wav[8000:24000], 10), -1, 1))
    long = np.zeros(12 * RATE, np.float32)
    long[RATE:] = 0.25
    assert np.all(audio_window(long, RATE, 1.0, 12.0) == 0.25)
    assert np.all(audio_window(wav, RATE, 1.0, 1.0) == 0)


def test_log_spectrogram_shape() -> None:
    pytest.importorskip("scipy")
    spec = log_spectrogram(np.random.default_rng(0).standard_normal(AUDIO_SAMPLES))
    assert spec.shape == (257, 1004)
    assert abs(spec.mean()) < 1e-4
    assert spec.std() == pytest.approx(1.0, abs=1e-3)


# ------------------------------------------------------------------------------------------
# EPIC, SimMMDG layout


def test_epic_extraction_on_fake_tree(tmp_path: Path) -> None:
    pytest.importorskip("scipy")
    raw = _fake_epic(tmp_path / "raw")
    assert detect_epic_layout(raw) == ("simmmdg", raw / "MM-SADA_Domain_Adaptation_Splits")
    out = extract_features(
        raw,
        tmp_path / "feat",
        dataset="epic",
        domains=["D1", "D2"],
        splits=["train"],
        backbones=BACKBONES,
        readers=MediaReaders(image=_frame_number),
        dtype="float32",
    )
    meta = read_meta(out)
    assert meta.classes[2] == "open"
    assert meta.target_splits == ("train",)
    assert {m: s.shape for m, s in meta.modalities.items()} == {
        "video": (32,),
        "flow": (16,),
        "audio": (4,),
    }
    data = load_split(out, ["D1", "D2"], "train")
    assert data.sample_id == ["11", "12", "13", "21", "22", "23"]  # rows aligned with the csv
    assert data.label.tolist() == [2, 0, 7, 1, 4, 5]
    rows = [(d, r) for d, (_, _, rs) in EPIC.items() for r in rs]
    for k, (domain, (_, start, stop, _)) in enumerate(rows):
        last_rgb = EPIC[domain][1] - 1
        video = data.features["video"][k].long()
        assert video.tolist() == sample_indices(start, stop, 32, 2, 0, last_rgb).tolist()
        assert video.min() >= start
        assert video.max() <= min(stop - 1, last_rgb)
        fstart, fstop = flow_span(start, stop)
        flow = data.features["flow"][k].long()
        assert flow[:8].tolist() == flow[8:].tolist()  # u and v read at the same indices
        assert flow[:8].tolist() == sample_indices(fstart, fstop, 8, 4, 0, last_rgb // 2).tolist()
        assert flow.min() >= fstart == math.ceil(start / 2)
    assert data.features["video"][5].max() == 28  # clip 0..30 loops (interval 2)
    assert data.features["video"][4].max() == 60  # clip 40..80 clamped to the last frame
    audio = data.features["audio"]
    assert audio[:, :2].tolist() == [[257.0, 1004.0]] * 6
    assert torch.allclose(audio[:, 2], torch.zeros(6), atol=1e-4)


def test_epic_clip_table_from_pickle(tmp_path: Path) -> None:
    pandas = pytest.importorskip("pandas")
    raw = _fake_epic(tmp_path)
    splits = raw / "MM-SADA_Domain_Adaptation_Splits"
    pandas.read_csv(splits / "D1_train.csv").to_pickle(splits / "D1_test.pkl")
    assert epic_clips(splits, "D1", "test") == epic_clips(splits, "D1", "train")


def test_epic_default_jpeg_reader(tmp_path: Path) -> None:
    image = pytest.importorskip("PIL.Image")
    pytest.importorskip("scipy")
    raw = _fake_epic(tmp_path / "raw")
    for folder in (raw / "rgb" / "train" / "D1" / "P08_01").glob("frame_*.jpg"):
        image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(folder)
    for axis in "uv":
        for folder in (raw / "flow" / "train" / "D1" / "P08_01" / axis).glob("frame_*.jpg"):
            image.fromarray(np.full((16, 16), 100, np.uint8)).save(folder)
    out = extract_features(
        raw,
        tmp_path / "feat",
        dataset="epic",
        domains=["D1"],
        splits=["train"],
        backbones={
            "video": lambda x: x.mean(dim=(2, 3, 4)),
            "flow": lambda x: x.mean(dim=(2, 3, 4)),
        },
    )
    data = load_split(out, "D1", "train")
    assert torch.allclose(data.features["video"], torch.full((3, 3), 200 / 255), atol=0.02)
    assert torch.allclose(data.features["flow"], torch.full((3, 2), 100 / 255), atol=0.02)


# ------------------------------------------------------------------------------------------
# EPIC, MMDG-Bench layout, and HAC, with a stub video decoder (no PyAV needed)


def _stub_video(path: Path) -> np.ndarray:
    """Stub mp4 decoder: 20 frames whose pixels hold the frame number."""
    assert path.is_file(), path
    return np.broadcast_to(np.arange(20, dtype=np.uint8)[:, None, None, None], (20, 4, 4, 3))


def test_mmdgbench_layout_file_names(tmp_path: Path) -> None:
    pytest.importorskip("scipy")
    splits = tmp_path / "MM-SADA_Domain_Adaptation_Splits"
    splits.mkdir(parents=True)
    (splits / "D1_test.csv").write_text(
        ",".join(COLUMNS) + "\n7,P08,P08_01,x,00:00:00.50,00:00:01.50,245,350,open,2\n"
    )
    (splits / "video" / "test" / "D1").mkdir(parents=True)
    (splits / "video" / "test" / "D1" / "D1_P08_01_245_350_2.mp4").touch()
    (splits / "flow" / "test" / "D1").mkdir(parents=True)
    for axis in "uv":  # fstart = ceil(245 / 2) = 123, fstop = 123 + 105 // 2 = 175
        (splits / "flow" / "test" / "D1" / f"D1_P08_01_123_175_2_{axis}.mp4").touch()
    _write_wav(splits / "audio" / "test" / "D1" / "P08_01.wav", 2.0, seed=0)
    assert detect_epic_layout(tmp_path) == ("mmdgbench", splits)
    out = extract_features(
        tmp_path,
        tmp_path / "feat",
        dataset="epic",
        domains=["D1"],
        splits=["test"],
        backbones=BACKBONES,
        readers=MediaReaders(video=_stub_video),
    )
    data = load_split(out, "D1", "test")
    assert data.sample_id == ["7"]
    assert data.label.tolist() == [2]
    assert data.features["video"][0].tolist() == sample_indices(0, 20, 32, 2).tolist()
    with pytest.raises(FileNotFoundError, match="neither"):
        detect_epic_layout(tmp_path / "video")


def _fake_hac(root: Path, make_video) -> Path:
    (root / "HAC_Splits").mkdir(parents=True)
    (root / "HAC_Splits" / "HAC_train_only_human.csv").write_text(
        "sleep_1.mp4,0\ndoor_opening_2.mp4,6\n"
    )
    for stem in ("sleep_1", "door_opening_2"):
        make_video(root / "human" / "videos" / f"{stem}.mp4")
        for axis in "xy":
            make_video(root / "human" / "flow" / f"{stem}_flow_{axis}.mp4")
        _write_wav(root / "human" / "audio" / f"{stem}.wav", 2.0, seed=1)
    return root


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def test_hac_extraction_with_stub_decoder(tmp_path: Path) -> None:
    pytest.importorskip("scipy")
    raw = _fake_hac(tmp_path / "raw", _touch)
    assert [c.sample_id for c in hac_clips(raw, "human", "train")] == [
        "sleep_1.mp4",
        "door_opening_2.mp4",
    ]
    out = extract_features(
        raw,
        tmp_path / "feat",
        dataset="hac",
        domains=["human"],
        splits=["train"],
        backbones=BACKBONES,
        readers=MediaReaders(video=_stub_video),
    )
    meta = read_meta(out)
    assert meta.classes[6] == "opening_door"
    assert len(meta.classes) == 7
    data = load_split(out, "human", "train")
    assert data.sample_id == ["sleep_1.mp4", "door_opening_2.mp4"]
    assert data.label.tolist() == [0, 6]
    assert data.features["flow"][0].tolist() == [0, 4, 8, 12, 16, 0, 4, 8] * 2
    assert data.features["audio"][:, :2].tolist() == [[257.0, 1004.0]] * 2


def test_hac_extraction_with_real_mp4(tmp_path: Path) -> None:
    av = pytest.importorskip("av")
    pytest.importorskip("scipy")

    def write_mp4(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with av.open(str(path), "w") as container:
            stream = container.add_stream("mpeg4", rate=24)
            stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
            for i in range(20):
                frame = np.full((32, 32, 3), 10 * i, np.uint8)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())

    raw = _fake_hac(tmp_path / "raw", write_mp4)
    out = extract_features(
        raw,
        tmp_path / "feat",
        dataset="hac",
        domains=["human"],
        splits=["train"],
        backbones={
            "video": lambda x: x.mean(dim=(1, 3, 4)),
            "flow": lambda x: x.mean(dim=(1, 3, 4)),
        },
    )
    data = load_split(out, "human", "train")
    assert data.features["video"].shape == (2, 32)
    assert data.features["flow"].shape == (2, 8)
    brightness = data.features["video"][0] * 255 / 10  # ~ frame number of each sampled frame
    assert torch.allclose(
        brightness, torch.tensor(sample_indices(0, 20, 32, 2), dtype=torch.float), atol=1.0
    )


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dataset must be"):
        extract_features(
            tmp_path, tmp_path / "o", dataset="ucf", domains=["a"], backbones=BACKBONES
        )
    with pytest.raises(ValueError, match="backbones must be keyed"):
        extract_features(
            tmp_path,
            tmp_path / "o",
            dataset="hac",
            domains=["a"],
            backbones={"depth": _audio_stats},
        )


# ------------------------------------------------------------------------------------------
# Command line


def test_cli_help_and_a_pooled_extraction(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from mmdg.extract import main

    image = pytest.importorskip("PIL.Image")
    pytest.importorskip("scipy")
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "feature-layout v1" in capsys.readouterr().out
    raw = _fake_epic(tmp_path / "raw")
    for frame in raw.rglob("frame_*.jpg"):  # real (tiny) JPEGs for the default decoder
        image.new("RGB", (12, 10), (int(frame.stem[-3:]) % 255, 0, 0)).save(frame)
    assert main(
        ["--raw", str(raw), "--out", str(tmp_path / "feat"), "--dataset", "epic",
         "--domains", "D1", "D2", "--splits", "train", "--modalities", "video", "audio",
         "--dtype", "float32"]
    ) == 0  # fmt: skip
    meta = read_meta(tmp_path / "feat")
    assert {m: s.shape for m, s in meta.modalities.items()} == {"video": (192,), "audio": (64,)}
    data = load_split(tmp_path / "feat", ["D1", "D2"], "train")
    assert data.features["video"].shape == (6, 192)
    with pytest.raises(SystemExit):
        main(["--raw", str(raw), "--out", "x", "--dataset", "epic", "--domains", "D1",
              "--backbone", "depth=pooled"])  # fmt: skip
