"""Optional feature extraction from the raw EPIC-Kitchens (MM-SADA) and HAC layouts.

Reads the raw layouts used by the SimMMDG / MOOSA / MMDG-Bench code bases, runs one frozen
backbone per modality on every clip and writes a feature-layout v1 folder
(:mod:`mmdg.features`). Backbones are plain callables, so any model can be plugged in::

    extract_features(raw_root, out_root, dataset="epic", domains=["D1", "D2", "D3"],
                     backbones={"video": video_net, "audio": audio_net, "flow": flow_net})

Backbone inputs (one clip at a time, batch dimension 1, values not normalised, so each
backbone does its own resizing / cropping / normalisation):

* ``video``: float ``[1, 3, T, H, W]`` in [0, 1], T = 32 frames at interval 2;
* ``flow``: float ``[1, 2, T, H, W]`` in [0, 1] (u, v), T = 8 frames at interval 4;
* ``audio``: float ``[1, 1, 257, 1004]``, log spectrogram of a 10-s window, z-scored.

Each backbone must return ``[1, D]`` (or anything that flattens to it).

Supported layouts (``ROOT`` is the folder passed in):

* EPIC, SimMMDG variant (detected by ``ROOT/rgb``)::

      ROOT/MM-SADA_Domain_Adaptation_Splits/{D}_{split}.csv|.pkl
      ROOT/rgb/{split}/{D}/{video_id}/frame_{i:010d}.jpg
      ROOT/rgb/{split}/{D}/{video_id}.wav
      ROOT/flow/{split}/{D}/{video_id}/{u,v}/frame_{j:010d}.jpg   j from ceil(start_frame / 2)

* EPIC, MMDG-Bench variant (media folders inside the splits folder)::

      SPLITS/{D}_{split}.csv|.pkl
      SPLITS/video/{split}/{D}/{D}_{video_id}_{start}_{stop}_{label}.mp4
      SPLITS/flow/{split}/{D}/{D}_{video_id}_{fstart}_{fstop}_{label}_{u,v}.mp4
      SPLITS/audio/{split}/{D}/{video_id}.wav

* HAC::

      ROOT/HAC_Splits/HAC_{split}_only_{domain}.csv      headerless "name.mp4,label"
      ROOT/{domain}/videos/{name}.mp4
      ROOT/{domain}/flow/{stem}_flow_x.mp4, {stem}_flow_y.mp4
      ROOT/{domain}/audio/{stem}.wav

EPIC annotation tables may be CSV (same columns as the pickles) or pickled DataFrames; the
latter need pandas and must only be loaded from trusted sources. JPEG decoding needs Pillow,
mp4 decoding needs PyAV, spectrograms need scipy; all are imported only when used.
"""

from __future__ import annotations

import csv
import importlib
import math
import re
import wave
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import numpy as np
import torch

from .features import FeatureMeta, ModalitySpec, write_feature_dataset

__all__ = [
    "AUDIO_SAMPLES",
    "EPIC_CLASSES",
    "HAC_CLASSES",
    "Backbone",
    "Clip",
    "MediaReaders",
    "audio_window",
    "detect_epic_layout",
    "epic_clips",
    "extract_features",
    "flow_span",
    "hac_clips",
    "load_backbone",
    "log_spectrogram",
    "main",
    "parse_timestamp",
    "pooled",
    "read_table",
    "read_wav",
    "sample_indices",
]

Backbone = Callable[[torch.Tensor], torch.Tensor]
T = TypeVar("T")

EPIC_CLASSES = ("take", "put", "open", "close", "wash", "cut", "mix", "pour")
HAC_CLASSES = (
    "sleeping",
    "watching_tv",
    "eating",
    "drinking",
    "swimming",
    "running",
    "opening_door",
)
EPIC_SPLITS_DIR = "MM-SADA_Domain_Adaptation_Splits"
AUDIO_RATE = 16000
AUDIO_SAMPLES = 160_000  # 10 s at 16 kHz
HAC_FPS = 24.0
VIDEO_FRAMES, VIDEO_INTERVAL = 32, 2
FLOW_FRAMES, FLOW_INTERVAL = 8, 4
_FRAME_RE = re.compile(r"frame_(\d+)\.jpg$")


def _optional(module: str, package: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"this step needs the optional package '{package}' (pip install {package})"
        ) from err


# --------------------------------------------------------------------------------------------
# annotations


@dataclass(frozen=True)
class Clip:
    """One annotated clip, normalised across datasets.

    Attributes:
        sample_id: Row id in the output (EPIC ``uid``, HAC file name).
        label: Class index.
        video_id: EPIC video id, or the HAC file stem.
        start_frame: First RGB frame (EPIC; 0 for HAC).
        stop_frame: Last RGB frame (EPIC; 0 for HAC).
        start_sec: Clip start in the video's audio (EPIC; 0 for HAC).
        stop_sec: Clip stop in the video's audio (EPIC; 0 for HAC).
    """

    sample_id: str
    label: int
    video_id: str
    start_frame: int = 0
    stop_frame: int = 0
    start_sec: float = 0.0
    stop_sec: float = 0.0


def read_table(path: str | Path) -> list[dict[str, str]]:
    """Reads an EPIC annotation table: CSV with a header row, or a pickled DataFrame.

    Args:
        path: ``.csv`` or ``.pkl`` file.

    Returns:
        One dict per row, values as text.

    Raises:
        ImportError: For a ``.pkl`` file when pandas is missing.
    """
    path = Path(path)
    if path.suffix == ".pkl":
        pandas = _optional("pandas", "pandas")
        frame = pandas.read_pickle(path)  # trusted input only: unpickling runs code
        return [{k: str(v) for k, v in row.items()} for row in frame.to_dict("records")]
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def parse_timestamp(text: str) -> float:
    """Converts ``HH:MM:SS.ss`` to seconds."""
    hours, minutes, seconds = text.strip().split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _annotation_file(splits_dir: Path, domain: str, split: str) -> Path:
    for suffix in (".csv", ".pkl"):
        path = splits_dir / f"{domain}_{split}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(f"no {domain}_{split}.csv or .pkl in {splits_dir}")


def epic_clips(splits_dir: str | Path, domain: str, split: str) -> list[Clip]:
    """Reads the clips of one EPIC domain and split.

    Args:
        splits_dir: Folder holding ``{domain}_{split}.csv`` or ``.pkl``.
        domain: ``D1``, ``D2`` or ``D3``.
        split: ``train`` or ``test``.

    Returns:
        The clips in file order.
    """
    rows = read_table(_annotation_file(Path(splits_dir), domain, split))
    return [
        Clip(
            sample_id=str(r["uid"]),
            label=int(r["verb_class"]),
            video_id=r["video_id"],
            start_frame=int(r["start_frame"]),
            stop_frame=int(r["stop_frame"]),
            start_sec=parse_timestamp(r["start_timestamp"]),
            stop_sec=parse_timestamp(r["stop_timestamp"]),
        )
        for r in rows
    ]


def hac_clips(root: str | Path, domain: str, split: str) -> list[Clip]:
    """Reads ``HAC_Splits/HAC_{split}_only_{domain}.csv`` (headerless ``name.mp4,label``).

    Args:
        root: HAC root folder.
        domain: ``human``, ``animal`` or ``cartoon``.
        split: ``train`` or ``test``.

    Returns:
        The clips in file order (``sample_id`` is the file name).
    """
    path = Path(root) / "HAC_Splits" / f"HAC_{split}_only_{domain}.csv"
    with path.open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f) if r]
    return [
        Clip(sample_id=name, label=int(label), video_id=Path(name).stem) for name, label in rows
    ]


# --------------------------------------------------------------------------------------------
# index arithmetic


def sample_indices(
    start: int, stop: int, n: int, interval: int, lo: int | None = None, hi: int | None = None
) -> np.ndarray:
    """Picks ``n`` frame indices ``interval`` apart, centred in ``[start, stop)``.

    Spans shorter than the clip loop around (modulo the span length); the result is then clamped
    to the frames that exist, ``[lo, hi]``.

    Args:
        start: First frame of the span.
        stop: End of the span (exclusive).
        n: Number of frames.
        interval: Step between frames.
        lo: Smallest existing frame index (``start`` by default).
        hi: Largest existing frame index (``stop - 1`` by default).

    Returns:
        int64 indices of length ``n``.
    """
    length = max(stop - start, 1)
    span = (n - 1) * interval + 1
    offset = max((length - span) // 2, 0)
    idx = start + (offset + np.arange(n, dtype=np.int64) * interval) % length
    lo = start if lo is None else lo
    hi = start + length - 1 if hi is None else hi
    return np.clip(idx, lo, hi)


def flow_span(start_frame: int, stop_frame: int) -> tuple[int, int]:
    """Flow-frame span of an RGB span; flow is stored at half the RGB frame rate.

    Returns:
        ``(fstart, fstop)`` with ``fstart = ceil(start / 2)`` and
        ``fstop = fstart + (stop - start) // 2``.
    """
    fstart = math.ceil(start_frame / 2)
    return fstart, fstart + (stop_frame - start_frame) // 2


# --------------------------------------------------------------------------------------------
# audio


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Reads a 16-bit PCM wav (stdlib ``wave``), mixing channels down.

    Returns:
        ``(samples in [-1, 1] as float32, sample rate)``.
    """
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM wav is supported")
        raw = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        x = raw.reshape(-1, w.getnchannels()).mean(axis=1)
        return (x / 32768.0).astype(np.float32), w.getframerate()


def audio_window(
    wav: np.ndarray, rate: int, start_sec: float, stop_sec: float, length: int = AUDIO_SAMPLES
) -> np.ndarray:
    """Cuts a clip's audio, keeps its first ``length`` samples, tiles it if shorter.

    Args:
        wav: Whole-video mono signal.
        rate: Its sample rate.
        start_sec: Clip start (s).
        stop_sec: Clip stop (s).
        length: Output length in samples.

    Returns:
        float32 ``[length]`` clipped to [-1, 1] (zeros if the cut is empty).
    """
    duration = len(wav) / rate
    a = int(start_sec / duration * len(wav))
    b = int(stop_sec / duration * len(wav))
    seg = wav[max(a, 0) : max(b, 0)][:length]
    if len(seg) == 0:
        return np.zeros(length, np.float32)
    seg = np.tile(seg, -(-length // len(seg)))[:length]
    return np.asarray(np.clip(seg, -1.0, 1.0), dtype=np.float32)


def log_spectrogram(x: np.ndarray, rate: int = AUDIO_RATE) -> np.ndarray:
    """Log power spectrogram (512-sample segments, 353 overlap), z-scored.

    For 160 000 samples this is ``[257, 1004]``.
    """
    signal = _optional("scipy.signal", "scipy")
    _, _, spec = signal.spectrogram(x, rate, nperseg=512, noverlap=353)
    spec = np.log(spec + 1e-7)
    return np.asarray((spec - spec.mean()) / (spec.std() + 1e-9), dtype=np.float32)


# --------------------------------------------------------------------------------------------
# media readers


def _read_image_pil(path: Path) -> np.ndarray:
    image = _optional("PIL.Image", "Pillow")
    with image.open(path) as im:
        return np.asarray(im)


def _read_video_av(path: Path) -> np.ndarray:
    av = _optional("av", "av")
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@dataclass(frozen=True)
class MediaReaders:
    """How media files are decoded; replace any of them (e.g. in tests).

    Attributes:
        image: JPEG path -> ``[H, W]`` or ``[H, W, 3]`` uint8 (default: Pillow).
        video: mp4 path -> ``[T, H, W, 3]`` uint8 (default: PyAV).
        wav: wav path -> ``(float32 samples, rate)`` (default: stdlib ``wave``).
    """

    image: Callable[[Path], np.ndarray] = _read_image_pil
    video: Callable[[Path], np.ndarray] = _read_video_av
    wav: Callable[[Path], tuple[np.ndarray, int]] = read_wav


def _to_gray(frames: np.ndarray) -> np.ndarray:
    return frames.mean(axis=-1) if frames.ndim == 4 else frames


def _rgb_tensor(frames: np.ndarray) -> torch.Tensor:
    """[T, H, W, 3] uint8 -> [1, 3, T, H, W] float in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).float() / 255.0
    return x.permute(3, 0, 1, 2).unsqueeze(0)


def _flow_tensor(u: np.ndarray, v: np.ndarray) -> torch.Tensor:
    """Two [T, H, W] grayscale stacks -> [1, 2, T, H, W] float in [0, 1]."""
    x = np.stack([_to_gray(u), _to_gray(v)]).astype(np.float32) / 255.0
    return torch.from_numpy(x).unsqueeze(0)


def _audio_tensor(wav: np.ndarray, rate: int, start: float, stop: float) -> torch.Tensor:
    spec = log_spectrogram(audio_window(wav, rate, start, stop), rate)
    return torch.from_numpy(spec)[None, None]


@lru_cache(maxsize=256)
def _frame_range(folder: Path) -> tuple[int, int]:
    found = [int(m.group(1)) for p in folder.iterdir() if (m := _FRAME_RE.search(p.name))]
    if not found:
        raise FileNotFoundError(f"no frame_*.jpg files in {folder}")
    return min(found), max(found)


def _read_frames(folder: Path, idx: np.ndarray, read: Callable[[Path], np.ndarray]) -> np.ndarray:
    return np.stack([read(folder / f"frame_{i:010d}.jpg") for i in idx.tolist()])


# --------------------------------------------------------------------------------------------
# per-layout clip inputs

Inputs = Callable[[Clip, str], torch.Tensor]  # (clip, modality) -> backbone input


@dataclass(frozen=True)
class _Layout:
    """Where one dataset variant keeps its annotations and the media of a (domain, split)."""

    clips: Callable[[str, str], list[Clip]]
    inputs: Callable[[str, str, MediaReaders], Inputs]
    classes: tuple[str, ...]
    target_splits: tuple[str, ...]


def _remember_last(read: Callable[[Path], T]) -> Callable[[Path], T]:
    """Wraps a reader so that reading the same file twice in a row decodes it once.

    Whole-video wavs are shared by consecutive EPIC clips; HAC videos are needed for both the
    frames and the audio window.
    """
    last: dict[Path, T] = {}

    def cached(path: Path) -> T:
        if path not in last:
            last.clear()
            last[path] = read(path)
        return last[path]

    return cached


def detect_epic_layout(root: str | Path) -> tuple[str, Path]:
    """Tells the EPIC layout variant of a folder.

    Args:
        root: The EPIC root (SimMMDG) or the splits folder / its parent (MMDG-Bench).

    Returns:
        ``("simmmdg", splits_dir)`` or ``("mmdgbench", splits_dir)``.

    Raises:
        FileNotFoundError: If neither layout is recognised.
    """
    root = Path(root)
    if (root / "rgb").is_dir():
        return "simmmdg", root / EPIC_SPLITS_DIR
    for splits in (root / EPIC_SPLITS_DIR, root):
        if (splits / "video").is_dir():
            return "mmdgbench", splits
    raise FileNotFoundError(
        f"{root}: neither 'rgb/' (SimMMDG layout) nor 'video/' (MMDG-Bench layout) found"
    )


def _epic_simmmdg(root: Path) -> _Layout:
    def inputs(domain: str, split: str, readers: MediaReaders) -> Inputs:
        rgb, flow = root / "rgb" / split / domain, root / "flow" / split / domain
        read_wav_ = _remember_last(readers.wav)

        def get(clip: Clip, modality: str) -> torch.Tensor:
            if modality == "video":
                folder = rgb / clip.video_id
                idx = sample_indices(
                    clip.start_frame,
                    clip.stop_frame,
                    VIDEO_FRAMES,
                    VIDEO_INTERVAL,
                    *_frame_range(folder),
                )
                return _rgb_tensor(_read_frames(folder, idx, readers.image))
            if modality == "flow":
                fstart, fstop = flow_span(clip.start_frame, clip.stop_frame)
                u, v = flow / clip.video_id / "u", flow / clip.video_id / "v"
                idx = sample_indices(fstart, fstop, FLOW_FRAMES, FLOW_INTERVAL, *_frame_range(u))
                return _flow_tensor(
                    _read_frames(u, idx, readers.image), _read_frames(v, idx, readers.image)
                )
            wav, rate = read_wav_(rgb / f"{clip.video_id}.wav")
            return _audio_tensor(wav, rate, clip.start_sec, clip.stop_sec)

        return get

    splits_dir = root / EPIC_SPLITS_DIR
    return _Layout(lambda d, s: epic_clips(splits_dir, d, s), inputs, EPIC_CLASSES, ("test",))


def _epic_mmdgbench(splits_dir: Path) -> _Layout:
    def inputs(domain: str, split: str, readers: MediaReaders) -> Inputs:
        read_wav_ = _remember_last(readers.wav)

        def get(clip: Clip, modality: str) -> torch.Tensor:
            stem = f"{domain}_{clip.video_id}"
            if modality == "video":
                name = f"{stem}_{clip.start_frame}_{clip.stop_frame}_{clip.label}.mp4"
                return _rgb_tensor(
                    _sample_video(
                        readers.video(splits_dir / "video" / split / domain / name),
                        VIDEO_FRAMES,
                        VIDEO_INTERVAL,
                    )
                )
            if modality == "flow":
                fstart, fstop = flow_span(clip.start_frame, clip.stop_frame)
                folder = splits_dir / "flow" / split / domain
                base = folder / f"{stem}_{fstart}_{fstop}_{clip.label}"
                u, v = (readers.video(Path(f"{base}_{a}.mp4")) for a in "uv")
                return _flow_tensor(
                    _sample_video(u, FLOW_FRAMES, FLOW_INTERVAL),
                    _sample_video(v, FLOW_FRAMES, FLOW_INTERVAL),
                )
            wav, rate = read_wav_(splits_dir / "audio" / split / domain / f"{clip.video_id}.wav")
            return _audio_tensor(wav, rate, clip.start_sec, clip.stop_sec)

        return get

    return _Layout(lambda d, s: epic_clips(splits_dir, d, s), inputs, EPIC_CLASSES, ("test",))


def _sample_video(frames: np.ndarray, n: int, interval: int) -> np.ndarray:
    return np.asarray(frames[sample_indices(0, len(frames), n, interval)])


def _hac(root: Path) -> _Layout:
    def inputs(domain: str, split: str, readers: MediaReaders) -> Inputs:
        base = root / domain
        read_video = _remember_last(readers.video)

        def get(clip: Clip, modality: str) -> torch.Tensor:
            if modality == "video":
                frames = read_video(base / "videos" / clip.sample_id)
                return _rgb_tensor(_sample_video(frames, VIDEO_FRAMES, VIDEO_INTERVAL))
            if modality == "flow":
                u, v = (
                    readers.video(base / "flow" / f"{clip.video_id}_flow_{a}.mp4") for a in "xy"
                )
                return _flow_tensor(
                    _sample_video(u, FLOW_FRAMES, FLOW_INTERVAL),
                    _sample_video(v, FLOW_FRAMES, FLOW_INTERVAL),
                )
            n_frames = len(read_video(base / "videos" / clip.sample_id))
            idx = sample_indices(0, n_frames, VIDEO_FRAMES, VIDEO_INTERVAL)
            wav, rate = readers.wav(base / "audio" / f"{clip.video_id}.wav")
            return _audio_tensor(wav, rate, idx[0] / HAC_FPS, idx[-1] / HAC_FPS)

        return get

    return _Layout(lambda d, s: hac_clips(root, d, s), inputs, HAC_CLASSES, ("train", "test"))


def _layout(raw_root: Path, dataset: str) -> _Layout:
    if dataset == "hac":
        return _hac(raw_root)
    if dataset == "epic":
        variant, splits_dir = detect_epic_layout(raw_root)
        return _epic_simmmdg(raw_root) if variant == "simmmdg" else _epic_mmdgbench(splits_dir)
    raise ValueError(f"dataset must be 'epic' or 'hac', got {dataset!r}")


# --------------------------------------------------------------------------------------------
# extraction


def _embed(backbone: Backbone, x: torch.Tensor, device: torch.device | str) -> np.ndarray:
    with torch.no_grad():
        out = backbone(x.to(device))
    return np.asarray(out.reshape(1, -1).float().cpu().numpy()[0])


def _rows(
    clips: Sequence[Clip],
    get: Inputs,
    backbones: Mapping[str, Backbone],
    device: torch.device | str,
) -> Iterator[dict[str, np.ndarray]]:
    for clip in clips:
        yield {m: _embed(net, get(clip, m), device) for m, net in backbones.items()}


def extract_features(
    raw_root: str | Path,
    out_root: str | Path,
    *,
    dataset: str,
    domains: Sequence[str],
    backbones: Mapping[str, Backbone],
    splits: Sequence[str] = ("train", "test"),
    readers: MediaReaders | None = None,
    name: str | None = None,
    dtype: str = "float16",
    device: torch.device | str = "cpu",
) -> Path:
    """Extracts per-modality features for every clip and writes a feature-layout folder.

    Rows keep the order of the annotation files; ``label`` and ``sample_id`` come from them.

    Args:
        raw_root: Raw dataset root (see the module docstring for the layouts).
        out_root: Output folder.
        dataset: ``"epic"`` (layout variant detected) or ``"hac"``.
        domains: Domains to extract, e.g. ``["D1", "D2", "D3"]`` or
            ``["human", "animal", "cartoon"]``.
        backbones: Modality (``"video"``, ``"flow"``, ``"audio"``) -> frozen backbone.
        splits: Splits to extract.
        readers: Media decoders; Pillow / PyAV / ``wave`` by default.
        name: Dataset name in ``meta.json`` (``"epic-kitchens-mmsada"`` / ``"hac"`` by default).
        dtype: Stored dtype, ``"float16"`` or ``"float32"``.
        device: Device the inputs are moved to before each backbone call.

    Returns:
        The folder written.

    Raises:
        ValueError: On an unknown dataset or modality, or an empty split.
    """
    unknown = [m for m in backbones if m not in ("video", "flow", "audio")]
    if unknown or not backbones:
        raise ValueError(f"backbones must be keyed by 'video', 'flow', 'audio'; got {unknown}")
    readers = readers or MediaReaders()
    layout = _layout(Path(raw_root), dataset)
    data: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for domain in domains:
        data[domain] = {}
        for split in splits:
            clips = layout.clips(domain, split)
            if not clips:
                raise ValueError(f"{dataset}: no clips for domain '{domain}', split '{split}'")
            rows = list(_rows(clips, layout.inputs(domain, split, readers), backbones, device))
            data[domain][split] = {
                "label": np.array([c.label for c in clips], dtype=np.int64),
                "sample_id": np.array([c.sample_id for c in clips]),
                **{m: np.stack([r[m] for r in rows]) for m in backbones},
            }
    first = data[domains[0]][splits[0]]
    meta = FeatureMeta(
        name=name or ("hac" if dataset == "hac" else "epic-kitchens-mmsada"),
        classes=layout.classes,
        domains=tuple(domains),
        splits=tuple(splits),
        modalities={
            m: ModalitySpec((first[m].shape[1],), dtype, extractor=_describe(net))
            for m, net in backbones.items()
        },
        target_splits=tuple(s for s in layout.target_splits if s in splits) or tuple(splits),
    )
    return write_feature_dataset(out_root, meta, data)


def _describe(backbone: Backbone) -> str:
    return getattr(backbone, "__name__", type(backbone).__name__)


def pooled(x: torch.Tensor, grid: int = 8) -> torch.Tensor:
    """A parameter-free backbone: average over time, then pool to a ``grid x grid`` map.

    Video ``[1, 3, T, H, W]`` gives ``3·grid²`` features, flow ``[1, 2, T, H, W]`` gives
    ``2·grid²``, audio ``[1, 1, F, T]`` gives ``grid²``. Enough to check a pipeline end to
    end; plug a real pretrained network for experiments.
    """
    if x.dim() == 5:
        x = x.mean(2)
    return torch.nn.functional.adaptive_avg_pool2d(x, grid).reshape(1, -1)


def load_backbone(spec: str) -> Backbone:
    """A backbone from ``"pooled"`` or ``"package.module:factory"`` (called with no arguments
    to build it, e.g. a function returning a pretrained ``nn.Module`` in eval mode)."""
    if spec == "pooled":
        return pooled
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"backbone {spec!r}: expected 'pooled' or 'package.module:factory'")
    factory = getattr(importlib.import_module(module), attr)
    backbone: Backbone = factory()
    return backbone


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: raw EPIC-Kitchens / HAC layout -> feature-layout v1 folder."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m mmdg.extract",
        description="Extract per-modality clip features from a raw EPIC-Kitchens (MM-SADA) or "
        "HAC layout into a feature-layout v1 folder that mmdg.compare reads.",
    )
    parser.add_argument("--raw", required=True, type=Path, help="raw dataset root")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--dataset", required=True, choices=["epic", "hac"])
    parser.add_argument("--domains", nargs="+", required=True, help="e.g. D1 D2 D3")
    parser.add_argument(
        "--modalities", nargs="+", default=["video", "audio"], choices=["video", "flow", "audio"]
    )
    parser.add_argument(
        "--backbone",
        action="append",
        default=[],
        metavar="MODALITY=SPEC",
        help="'pooled' (default, parameter-free) or 'package.module:factory' per modality",
    )
    parser.add_argument("--splits", nargs="+", default=["train", "test"])
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    specs = dict.fromkeys(args.modalities, "pooled")
    for item in args.backbone:
        modality, sep, spec = item.partition("=")
        if not sep or modality not in specs:
            parser.error(f"--backbone {item!r}: expected MODALITY=SPEC for one of {list(specs)}")
        specs[modality] = spec
    out = extract_features(
        args.raw,
        args.out,
        dataset=args.dataset,
        domains=args.domains,
        backbones={m: load_backbone(spec) for m, spec in specs.items()},
        splits=args.splits,
        dtype=args.dtype,
        device=args.device,
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
