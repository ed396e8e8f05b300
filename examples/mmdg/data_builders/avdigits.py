"""AV-Digits-DG: a small, real audio-visual domain-generalization benchmark.

Each sample pairs, by label, a handwritten digit (scikit-learn's bundled ``load_digits``) with
the spoken word for the same digit, synthesized by eSpeak NG in one of four languages. A domain
is a (language, visual style) pair: ``en`` (English, upright), ``de`` (German, 20 deg, thick),
``fr`` (French, -20 deg, blurred), ``es`` (Spanish, 40 deg, thick and blurred).

* Audio (strong on the source domains, domain-specific: only cognates transfer across
  languages): random voice variant, speed and pitch; the utterance is put at a random offset of
  a 1-s window at 16 kHz with random gain and white noise (SNR 0-20 dB), then turned into a
  40-band log-mel spectrogram of 48 frames, z-scored per sample -> ``[40, 48]``.
* Vision (weaker, but transfers across styles): a disjoint quarter of the digit images per
  domain, upsampled to 16x16, styled per domain, then jittered (rotation, shift) and noised ->
  ``[16, 16]``.

The output is a feature-layout v1 folder (see :mod:`mmdg.features`). Generation is
deterministic given the seed and the parameters (eSpeak NG's internal noise generator is
re-seeded before every utterance and utterances are synthesized in a fixed order).

Requires the optional packages ``scikit-learn`` (digit images), ``espeakng-loader`` (eSpeak NG
library and voices; GPL-3.0) and ``scipy`` (resampling, image transforms); they are imported
only when a dataset is built.

Command line (run from the ``examples`` folder)::

    python -m mmdg.avdigits --out DIR --seed 0 --pairs 3600
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import importlib
import importlib.metadata
import multiprocessing
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # imported lazily so that synthesis worker processes do not load torch
    from ..features import FeatureMeta

__all__ = [
    "DOMAINS",
    "AVDigitsConfig",
    "Speaker",
    "VisualStyle",
    "audio_vision_meta",
    "build_av_digits",
    "digit_pools",
    "log_mel",
    "main",
    "mel_filterbank",
    "optional_import",
    "package_version",
    "place_in_window",
    "plan_domain",
    "quantize",
    "style_image",
    "synthesize",
    "write_av_digits",
]

_INSTALL_HINT = "pip install scikit-learn espeakng-loader scipy"


@dataclass(frozen=True)
class VisualStyle:
    """Domain-level look of the digit images.

    Attributes:
        angle: Rotation in degrees (counter-clockwise).
        dilate: Whether strokes are thickened (grey dilation, 2x2).
        blur: Gaussian blur sigma in pixels (0 = none).
    """

    angle: float = 0.0
    dilate: bool = False
    blur: float = 0.0


#: Domain name -> (eSpeak NG voice file, visual style).
DOMAINS: dict[str, tuple[str, VisualStyle]] = {
    "en": ("en-us", VisualStyle(0.0)),
    "de": ("de", VisualStyle(20.0, dilate=True)),
    "fr": ("fr", VisualStyle(-20.0, blur=0.8)),
    "es": ("es", VisualStyle(40.0, dilate=True, blur=0.5)),
}

VOICE_VARIANTS = tuple(f"m{i}" for i in range(1, 8)) + tuple(f"f{i}" for i in range(1, 6))


@dataclass(frozen=True)
class AVDigitsConfig:
    """Every parameter of a build; recorded in ``meta.json``.

    Attributes:
        pairs_per_class: Pairs per class per domain.
        domains: Domain names (keys of :data:`DOMAINS`).
        seed: Seed of the only random generator.
        test_fraction: Fraction of each (domain, class) put in the ``test`` split.
        sample_rate: Audio rate after resampling (Hz).
        window_s: Audio window length (s).
        n_fft: STFT size.
        n_mels: Mel bands.
        n_frames: Spectrogram frames over the window.
        rate: Speaking-rate range (words per minute), inclusive.
        pitch: Pitch range (eSpeak 0-100 scale), inclusive.
        gain: Gain range.
        snr_db: Signal-to-noise range of the added white noise (dB).
        image_size: Side of the output images (the 8x8 digits are zoomed to it).
        jitter_deg: Per-sample rotation jitter, +- degrees.
        shift_px: Per-sample shift, +- pixels per axis.
        pixel_noise: Standard deviation of the Gaussian pixel noise (pixels are in [0, 1]).
        quantum: Features are rounded to multiples of this before float16 storage (0 = off);
            it makes the compressed files much smaller (the features are z-scored or in
            [0, 1], so 0.25 keeps the class information; see DATA.md).
    """

    pairs_per_class: int = 90
    domains: tuple[str, ...] = ("en", "de", "fr", "es")
    seed: int = 0
    test_fraction: float = 0.2
    sample_rate: int = 16000
    window_s: float = 1.0
    n_fft: int = 512
    n_mels: int = 40
    n_frames: int = 48
    rate: tuple[int, int] = (110, 210)
    pitch: tuple[int, int] = (15, 85)
    gain: tuple[float, float] = (0.5, 1.5)
    snr_db: tuple[float, float] = (0.0, 20.0)
    image_size: int = 16
    jitter_deg: float = 10.0
    shift_px: float = 1.5
    pixel_noise: float = 0.25
    quantum: float = 0.25

    def __post_init__(self) -> None:
        unknown = [d for d in self.domains if d not in DOMAINS]
        if unknown or not self.domains:
            raise ValueError(f"unknown domains {unknown}; choose from {list(DOMAINS)}")
        if self.pairs_per_class < 2 or not 0.0 < self.test_fraction < 1.0:
            raise ValueError("need pairs_per_class >= 2 and 0 < test_fraction < 1")


def optional_import(module: str) -> ModuleType:
    """Imports an optional dependency of the builders, or raises with the install hint."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"AV-Digits-DG needs the optional package providing '{module}'; install with: "
            f"{_INSTALL_HINT}"
        ) from err


# --------------------------------------------------------------------------------------------
# eSpeak NG through ctypes

_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class Speaker:
    """Synthesizes speech with the eSpeak NG library shipped by ``espeakng-loader``.

    The library is process-global: create one ``Speaker`` per process and use processes, not
    threads, for parallelism. Output depends on everything synthesized before in the process;
    see :func:`synthesize` for reproducible batches.
    """

    _AUDIO_OUTPUT_SYNCHRONOUS = 2
    _RATE, _PITCH = 1, 3
    _POS_CHARACTER = 1

    def __init__(self) -> None:
        loader = optional_import("espeakng_loader")
        self._lib = ctypes.cdll.LoadLibrary(loader.get_library_path())
        self._lib.espeak_Initialize.restype = ctypes.c_int
        rate = self._lib.espeak_Initialize(
            self._AUDIO_OUTPUT_SYNCHRONOUS, 0, str(loader.get_data_path()).encode(), 0
        )
        if rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({rate})")
        self.sample_rate = int(rate)
        self._chunks: list[np.ndarray] = []
        self._callback = _SynthCallback(self._collect)  # keep a reference for the C side
        self._lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav: Any, n: int, _events: Any) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def speak(self, text: str, voice: str, *, rate: int, pitch: int, seed: int) -> np.ndarray:
        """Returns the utterance as float32 in [-1, 1] at :attr:`sample_rate`.

        Args:
            text: What to say (a numeral is read in the voice's language).
            voice: Voice file name with optional variant, e.g. ``"de+f3"``.
            rate: Speaking rate in words per minute.
            pitch: Base pitch, 0-100.
            seed: Seed for eSpeak NG's internal noise generator.

        Raises:
            ValueError: If the voice is unknown.
        """
        self._chunks = []
        self._lib.espeak_ng_SetRandSeed(ctypes.c_uint(seed))
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice {voice!r}")
        self._lib.espeak_SetParameter(self._RATE, int(rate), 0)
        self._lib.espeak_SetParameter(self._PITCH, int(pitch), 0)
        data = text.encode()
        self._lib.espeak_Synth(data, len(data) + 1, 0, self._POS_CHARACTER, 0, 0, None, None)
        self._lib.espeak_Synchronize()
        out = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return out.astype(np.float32) / 32768.0


# --------------------------------------------------------------------------------------------
# audio features


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular mel filters (HTK mel scale) from 0 Hz to Nyquist.

    Args:
        sample_rate: Sampling rate (Hz).
        n_fft: FFT size.
        n_mels: Number of bands.

    Returns:
        ``[n_mels, n_fft // 2 + 1]`` float64 weights.
    """

    def to_mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def to_hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = to_hz(np.linspace(0.0, to_mel(np.array(sample_rate / 2)), n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lo) / (mid - lo)
    falling = (hi - freqs) / (hi - mid)
    return np.asarray(np.clip(np.minimum(rising, falling), 0.0, None))


def log_mel(x: np.ndarray, cfg: AVDigitsConfig) -> np.ndarray:
    """Log-mel spectrogram of one window, z-scored.

    Args:
        x: Mono signal of ``window_s * sample_rate`` samples.
        cfg: Build parameters (``n_fft``, ``n_mels``, ``n_frames``, ``sample_rate``).

    Returns:
        ``[n_mels, n_frames]`` float32 with zero mean and unit variance.
    """
    hop = (len(x) - cfg.n_fft) // (cfg.n_frames - 1)
    starts = np.arange(cfg.n_frames) * hop
    frames = x[starts[:, None] + np.arange(cfg.n_fft)] * np.hanning(cfg.n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    mel = np.log(mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels) @ power.T + 1e-10)
    return np.asarray((mel - mel.mean()) / (mel.std() + 1e-6), dtype=np.float32)


def place_in_window(
    utterance: np.ndarray, rng: np.random.Generator, cfg: AVDigitsConfig
) -> np.ndarray:
    """Puts an utterance at a random offset of a silent window, with random gain and noise.

    Args:
        utterance: Mono signal at ``cfg.sample_rate`` (truncated if longer than the window).
        rng: Random generator (draws offset, gain, SNR, noise, in that order).
        cfg: Build parameters (``window_s``, ``gain``, ``snr_db``).

    Returns:
        The noisy window, float64.
    """
    n = round(cfg.window_s * cfg.sample_rate)
    u = utterance[:n].astype(np.float64)
    start = int(rng.integers(0, n - len(u) + 1))
    gain = rng.uniform(*cfg.gain)
    snr = rng.uniform(*cfg.snr_db)
    x = np.zeros(n)
    x[start : start + len(u)] = gain * u
    power = float(np.mean((gain * u) ** 2)) if len(u) else 1e-6
    return np.asarray(x + np.sqrt(power / 10.0 ** (snr / 10.0)) * rng.standard_normal(n))


# --------------------------------------------------------------------------------------------
# images


def style_image(
    digit: np.ndarray, style: VisualStyle, rng: np.random.Generator, cfg: AVDigitsConfig
) -> np.ndarray:
    """Zooms an 8x8 digit, applies the domain style, per-sample jitter and noise.

    Args:
        digit: ``[8, 8]`` image with values in [0, 1].
        style: The domain's style.
        rng: Random generator (draws angle jitter, shift, noise, in that order).
        cfg: Build parameters (``image_size``, ``jitter_deg``, ``shift_px``, ``pixel_noise``).

    Returns:
        ``[image_size, image_size]`` float32.
    """
    ndimage = optional_import("scipy.ndimage")
    img = ndimage.zoom(digit, cfg.image_size / digit.shape[0], order=1)
    if style.dilate:
        img = ndimage.grey_dilation(img, size=(2, 2))
    if style.blur > 0:
        img = ndimage.gaussian_filter(img, style.blur)
    angle = style.angle + rng.uniform(-cfg.jitter_deg, cfg.jitter_deg)
    img = ndimage.rotate(img, angle, reshape=False, order=1)
    img = ndimage.shift(img, rng.uniform(-cfg.shift_px, cfg.shift_px, size=2), order=1)
    return np.asarray(img + cfg.pixel_noise * rng.standard_normal(img.shape), dtype=np.float32)


def digit_pools(
    labels: np.ndarray, n_domains: int, rng: np.random.Generator
) -> list[list[np.ndarray]]:
    """Splits image indices into disjoint, class-stratified parts, one per domain."""
    pools: list[list[np.ndarray]] = [[] for _ in range(n_domains)]
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        for d, part in enumerate(np.array_split(idx, n_domains)):
            pools[d].append(part)
    return pools


# --------------------------------------------------------------------------------------------
# build


def quantize(x: np.ndarray, quantum: float) -> np.ndarray:
    """Rounds to multiples of ``quantum`` (0: no rounding) and stores as float16."""
    return (np.round(x / quantum) * quantum if quantum > 0 else x).astype(np.float16)


@dataclass(frozen=True)
class _Utterance:
    text: str
    voice: str
    rate: int
    pitch: int
    seed: int


def _synthesize_batch(batch: Sequence[_Utterance]) -> tuple[list[np.ndarray], int]:
    """Synthesizes utterances in order with a fresh eSpeak NG (runs in its own process)."""
    speaker = Speaker()
    wavs = [speaker.speak(u.text, u.voice, rate=u.rate, pitch=u.pitch, seed=u.seed) for u in batch]
    return wavs, speaker.sample_rate


def synthesize(
    batches: Sequence[Sequence[_Utterance]], workers: int = 1
) -> list[tuple[list[np.ndarray], int]]:
    """Synthesizes each batch in a fresh process, in order.

    eSpeak NG keeps waveform state from one utterance to the next that neither re-seeding nor
    re-initialising clears, so the same requests give the same samples only when they are
    synthesized in the same order from a fresh process. One process per batch (``spawn``,
    ``maxtasksperchild=1``) makes the output independent of ``workers`` and of anything
    synthesized before.

    Args:
        batches: Utterance requests; each batch is synthesized sequentially.
        workers: Processes run at the same time.

    Returns:
        Per batch, the float32 waveforms and their sample rate.
    """
    context = multiprocessing.get_context("spawn")
    with context.Pool(max(1, min(workers, len(batches))), maxtasksperchild=1) as pool:
        return pool.map(_synthesize_batch, batches, chunksize=1)


def plan_domain(
    labels: np.ndarray, voice: str, rng: np.random.Generator, cfg: AVDigitsConfig
) -> tuple[np.ndarray, list[_Utterance]]:
    """Draws the synthesis order and the voice parameters of one domain."""
    n = len(labels)
    order = rng.permutation(n)
    variant = rng.integers(len(VOICE_VARIANTS), size=n)
    rate = rng.integers(cfg.rate[0], cfg.rate[1] + 1, size=n)
    pitch = rng.integers(cfg.pitch[0], cfg.pitch[1] + 1, size=n)
    seed = rng.integers(2**31, size=n)
    return order, [
        _Utterance(
            str(labels[i]),
            f"{voice}+{VOICE_VARIANTS[variant[k]]}",
            int(rate[k]),
            int(pitch[k]),
            int(seed[k]),
        )
        for k, i in enumerate(order)
    ]


def build_av_digits(
    cfg: AVDigitsConfig, *, workers: int = 1, progress: Callable[[str], None] | None = None
) -> tuple[FeatureMeta, dict[str, dict[str, dict[str, np.ndarray]]]]:
    """Builds AV-Digits-DG in memory.

    Args:
        cfg: Build parameters.
        workers: Processes used for speech synthesis (does not change the output).
        progress: Called with a short message after each stage.

    Returns:
        The metadata and ``data[domain][split][key]`` for :func:`write_feature_dataset`.

    Raises:
        ImportError: If scikit-learn, espeakng-loader or scipy is missing.
    """
    datasets = optional_import("sklearn.datasets")
    signal = optional_import("scipy.signal")
    optional_import("espeakng_loader")  # fail here, not inside a worker process
    digits = datasets.load_digits()
    images = digits.images / 16.0
    rng = np.random.default_rng(cfg.seed)
    pools = digit_pools(digits.target, len(cfg.domains), rng)
    n_test = max(1, round(cfg.test_fraction * cfg.pairs_per_class))
    labels = np.repeat(np.arange(10), cfg.pairs_per_class)
    is_test = np.tile(np.arange(cfg.pairs_per_class) >= cfg.pairs_per_class - n_test, 10)
    plans = [plan_domain(labels, DOMAINS[d][0], rng, cfg) for d in cfg.domains]
    speech = synthesize([utterances for _, utterances in plans], workers)
    if progress is not None:
        progress(f"synthesized {len(labels) * len(cfg.domains)} utterances")

    data: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for d, domain in enumerate(cfg.domains):
        (order, _), (wavs, rate) = plans[d], speech[d]
        audio = np.empty((len(labels), cfg.n_mels, cfg.n_frames), np.float16)
        vision = np.empty((len(labels), cfg.image_size, cfg.image_size), np.float16)
        for i, wav in zip(order, wavs, strict=True):
            wav = signal.resample_poly(wav, cfg.sample_rate, rate)
            audio[i] = quantize(log_mel(place_in_window(wav, rng, cfg), cfg), cfg.quantum)
            image = images[rng.choice(pools[d][labels[i]])]
            vision[i] = quantize(style_image(image, DOMAINS[domain][1], rng, cfg), cfg.quantum)
        ids = np.array([f"{domain}-{i}" for i in range(len(labels))])
        data[domain] = {
            split: {
                "label": labels[sel],
                "sample_id": ids[sel],
                "audio": audio[sel],
                "vision": vision[sel],
            }
            for split, sel in (("train", ~is_test), ("test", is_test))
        }
        if progress is not None:
            progress(f"{domain}: {len(labels)} pairs")
    return _meta(cfg), data


def package_version(name: str) -> str:
    """The installed version of a distribution, or ``"unknown"``."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def audio_vision_meta(
    cfg: AVDigitsConfig,
    *,
    name: str,
    module: str,
    audio_extractor: str,
    about: Mapping[str, Any],
) -> FeatureMeta:
    """The feature-layout meta of a spoken-digit × handwritten-digit build.

    Shared by the AV-Digits-DG builders: log-mel audio and styled 16×16 images in float16,
    train/test splits per domain, and the generator's record (module, every parameter of
    ``cfg``, the versions of the packages the bytes depend on, then ``about``).

    Args:
        cfg: The build's parameters (any `AVDigitsConfig`).
        name: The dataset's name.
        module: The command that rebuilds it (``python -m <module>``).
        audio_extractor: How the audio features were made, in words.
        about: Further generator entries (e.g. each domain's voice or condition).

    Returns:
        The meta `mmdg.features.write_feature_dataset` writes.
    """
    from ..features import FeatureMeta, ModalitySpec

    params = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
    return FeatureMeta(
        name=name,
        classes=tuple(str(c) for c in range(10)),
        domains=cfg.domains,
        modalities={
            "audio": ModalitySpec((cfg.n_mels, cfg.n_frames), "float16", extractor=audio_extractor),
            "vision": ModalitySpec(
                (cfg.image_size, cfg.image_size),
                "float16",
                extractor="sklearn load_digits, styled, 16x16",
            ),
        },
        target_splits=("train", "test"),
        extra={
            "generator": {
                "module": module,
                "params": params,
                "packages": {
                    p: package_version(p)
                    for p in ("espeakng-loader", "scikit-learn", "scipy", "numpy")
                },
                **about,
            }
        },
    )


def _meta(cfg: AVDigitsConfig) -> FeatureMeta:
    return audio_vision_meta(
        cfg,
        name="av-digits-dg",
        module="mmdg.avdigits",
        audio_extractor="espeak-ng word, 16 kHz, log-mel, z-scored",
        about={"voices": {d: DOMAINS[d][0] for d in cfg.domains}},
    )


def write_av_digits(
    out: str | Path,
    cfg: AVDigitsConfig,
    *,
    workers: int = 1,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Builds AV-Digits-DG and writes it as a feature-layout folder.

    Args:
        out: Output folder.
        cfg: Build parameters.
        workers: Processes used for speech synthesis (does not change the output).
        progress: Called with a short message after each stage.

    Returns:
        The folder written.
    """
    from ..features import write_feature_dataset

    meta, data = build_av_digits(cfg, workers=workers, progress=progress)
    return write_feature_dataset(out, meta, data)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m mmdg.avdigits",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--pairs",
        type=int,
        default=3600,
        help="total pairs over all domains and classes (a multiple of 10 x number of domains)",
    )
    parser.add_argument(
        "--domains", nargs="+", default=list(AVDigitsConfig.domains), choices=list(DOMAINS)
    )
    parser.add_argument("--test-fraction", type=float, default=AVDigitsConfig.test_fraction)
    parser.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="synthesis processes (the output does not depend on it)",
    )
    parser.add_argument(
        "--quantum",
        type=float,
        default=AVDigitsConfig.quantum,
        help="rounding step of the stored features (0 = none)",
    )
    args = parser.parse_args(argv)
    per_class, rest = divmod(args.pairs, 10 * len(args.domains))
    if rest:
        parser.error(f"--pairs must be a multiple of {10 * len(args.domains)}")
    cfg = AVDigitsConfig(
        pairs_per_class=per_class,
        domains=tuple(args.domains),
        seed=args.seed,
        test_fraction=args.test_fraction,
        quantum=args.quantum,
    )
    out = write_av_digits(args.out, cfg, workers=args.workers, progress=print)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
