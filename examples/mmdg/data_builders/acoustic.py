"""AV-Digits-DG acoustic: one language, four recording conditions.

The second AV-Digits benchmark. Every spoken digit is English (eSpeak NG, ``en-us``); a domain
is a *recording condition* paired with a visual style, as in :mod:`mmdg.avdigits`:

* ``close`` -- close-talk microphone: the dry utterance (upright digits);
* ``phone`` -- telephone line: band-pass 300-3400 Hz, down to 8 kHz and back, light dynamic
  range compression (rotated 20 deg, thick strokes);
* ``room`` -- distant microphone in a reverberant room: convolution with a synthetic,
  exponentially decaying impulse response, RT60 0.5-1.2 s (rotated -20 deg, blurred);
* ``street`` -- outdoors: the background noise is mixed with babble-like noise (rotated
  40 deg, thick and blurred).

Every condition gets the same background noise floor: coloured noise (``1/f^b`` power
spectrum, ``b`` drawn from the same range for every condition) at an SNR drawn from the same
range, measured against the speech *after* the channel and added after it (a recorder's
floor). No condition is recognisable by the level or colour of its noise alone: a condition
that makes audio trivially domain-identifiable lets the domain-adversarial loss dominate
training (see DATA.md).

The speech synthesis, log-mel features, images and file layout are those of
:mod:`mmdg.avdigits`; the channel effects use numpy and scipy only. Generation is deterministic
given the seed and the parameters.

Requires the optional packages ``scikit-learn``, ``espeakng-loader`` (GPL-3.0) and ``scipy``;
they are imported only when a dataset is built.

Command line (run from the ``examples`` folder)::

    python -m mmdg.acoustic --out mmdg/data/av-digits-dg-acoustic --seed 0
"""

from __future__ import annotations

import argparse
import functools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .avdigits import (
    AVDigitsConfig,
    VisualStyle,
    audio_vision_meta,
    digit_pools,
    log_mel,
    optional_import,
    plan_domain,
    quantize,
    style_image,
    synthesize,
)

if TYPE_CHECKING:  # imported lazily so that synthesis worker processes do not load torch
    from ..features import FeatureMeta

__all__ = [
    "CONDITIONS",
    "AcousticConfig",
    "Condition",
    "add_noise",
    "apply_condition",
    "babble_noise",
    "build_acoustic",
    "coloured_noise",
    "compress",
    "main",
    "reverberate",
    "room_impulse_response",
    "street_noise",
    "telephone",
    "write_acoustic",
]


@dataclass(frozen=True)
class Condition:
    """A recording condition and the look of the digits paired with it.

    Attributes:
        description: What the channel does (recorded in ``meta.json``).
        style: The visual style of the domain.
    """

    description: str
    style: VisualStyle


#: Domain name -> recording condition. The visual styles are those of AV-Digits-DG's domains.
CONDITIONS: dict[str, Condition] = {
    "close": Condition("close-talk microphone, dry", VisualStyle(0.0)),
    "phone": Condition(
        "telephone: band-pass, 8 kHz and back, compression", VisualStyle(20.0, dilate=True)
    ),
    "room": Condition("reverberant room, synthetic impulse response", VisualStyle(-20.0, blur=0.8)),
    "street": Condition(
        "street: coloured + babble-like noise", VisualStyle(40.0, dilate=True, blur=0.5)
    ),
}


@dataclass(frozen=True)
class AcousticConfig(AVDigitsConfig):
    """Every parameter of a build; recorded in ``meta.json``.

    Inherits the speech, feature and image parameters of
    :class:`~mmdg.avdigits.AVDigitsConfig` (``snr_db`` is the SNR range of every condition's
    additive noise); the fields below describe the conditions.

    Attributes:
        voice: eSpeak NG voice file of every utterance.
        phone_band: Telephone pass band (Hz).
        phone_rate: Telephone sampling rate (Hz).
        compress_threshold_db: Compressor threshold, relative to the loudest 20 ms (dB).
        compress_ratio: Compressor ratio above the threshold.
        rt60: Reverberation-time range (s): the impulse response decays by 60 dB.
        drr_db: Direct-to-reverberant energy ratio range (dB).
        noise_exponent: Range of ``b`` in the ``1/f^b`` power spectrum of every condition's
            noise (the same for all, so that the noise's colour does not tell the condition).
        babble_share: Range of the babble part's share of the street noise power.
        babble_talkers: Babble-like voices in the street noise.
    """

    domains: tuple[str, ...] = ("close", "phone", "room", "street")
    snr_db: tuple[float, float] = (-5.0, 15.0)
    voice: str = "en-us"
    phone_band: tuple[float, float] = (300.0, 3400.0)
    phone_rate: int = 8000
    compress_threshold_db: float = -20.0
    compress_ratio: float = 3.0
    rt60: tuple[float, float] = (0.5, 1.2)
    drr_db: tuple[float, float] = (-6.0, 0.0)
    noise_exponent: tuple[float, float] = (0.0, 2.0)
    babble_share: tuple[float, float] = (0.3, 0.7)
    babble_talkers: int = 6

    def __post_init__(self) -> None:
        unknown = [d for d in self.domains if d not in CONDITIONS]
        if unknown or not self.domains:
            raise ValueError(f"unknown domains {unknown}; choose from {list(CONDITIONS)}")
        if self.pairs_per_class < 2 or not 0.0 < self.test_fraction < 1.0:
            raise ValueError("need pairs_per_class >= 2 and 0 < test_fraction < 1")
        low, high = self.phone_band
        if not 0 < low < high < self.phone_rate / 2 <= self.sample_rate / 2:
            raise ValueError("need 0 < phone_band[0] < phone_band[1] < phone_rate / 2")


# --------------------------------------------------------------------------------------------
# channel effects (numpy / scipy only; each is a pure function of its inputs)


@functools.lru_cache(maxsize=16)
def _butter(order: int, cutoff: float | tuple[float, float], btype: str, fs: float) -> np.ndarray:
    """Butterworth second-order sections (cached: designing them costs more than filtering)."""
    signal = optional_import("scipy.signal")
    return np.asarray(signal.butter(order, cutoff, btype=btype, fs=fs, output="sos"))


def compress(
    x: np.ndarray,
    sample_rate: int,
    *,
    threshold_db: float = -20.0,
    ratio: float = 3.0,
    window_s: float = 0.02,
) -> np.ndarray:
    """Static dynamic-range compression.

    The level is the signal's power over a centred ``window_s`` window, in dB relative to its
    maximum; above ``threshold_db`` every ``ratio`` dB of input level give 1 dB of output
    level. Because the threshold is relative, ``compress(c * x) == c * compress(x)``.

    Args:
        x: Mono signal.
        sample_rate: Sampling rate (Hz).
        threshold_db: Threshold relative to the loudest window (dB, <= 0).
        ratio: Compression ratio (1 = off).
        window_s: Level-measurement window (s).

    Returns:
        The compressed signal, same length, float64.
    """
    x = np.asarray(x, dtype=np.float64)
    if ratio == 1.0 or not np.any(x):
        return x.copy()
    ndimage = optional_import("scipy.ndimage")
    size = max(1, round(window_s * sample_rate))
    power = ndimage.uniform_filter1d(x * x, size, mode="constant")
    level_db = 10.0 * np.log10(np.maximum(power, 1e-30) / power.max())
    gain_db = -(1.0 - 1.0 / ratio) * np.maximum(level_db - threshold_db, 0.0)
    return np.asarray(x * 10.0 ** (gain_db / 20.0))


def telephone(
    x: np.ndarray,
    sample_rate: int,
    *,
    band: tuple[float, float] = (300.0, 3400.0),
    narrow_rate: int = 8000,
    threshold_db: float = -20.0,
    ratio: float = 3.0,
) -> np.ndarray:
    """A telephone channel: band-pass, resampling to ``narrow_rate`` and back, compression.

    Args:
        x: Mono signal.
        sample_rate: Its sampling rate (Hz).
        band: Pass band (Hz); 6th-order Butterworth edges.
        narrow_rate: The line's sampling rate (Hz).
        threshold_db: Compressor threshold (see :func:`compress`).
        ratio: Compressor ratio (1 = no compression).

    Returns:
        The signal as heard at the far end, same length and rate, float64.
    """
    signal = optional_import("scipy.signal")
    sos = _butter(6, (float(band[0]), float(band[1])), "bandpass", float(sample_rate))
    y = signal.sosfilt(sos, np.asarray(x, dtype=np.float64))
    g = math.gcd(int(sample_rate), int(narrow_rate))
    up, down = int(narrow_rate) // g, int(sample_rate) // g
    y = signal.resample_poly(signal.resample_poly(y, up, down), down, up)
    y = np.pad(y[: len(x)], (0, max(0, len(x) - len(y))))
    return compress(y, sample_rate, threshold_db=threshold_db, ratio=ratio)


def room_impulse_response(
    sample_rate: int,
    rt60: float,
    drr_db: float,
    rng: np.random.Generator,
    *,
    predelay_s: float = 0.004,
) -> np.ndarray:
    """A synthetic room impulse response: a direct path and an exponentially decaying tail.

    ``h[0] = 1`` is the direct sound; after ``predelay_s`` a Gaussian-noise tail decays by
    60 dB in ``rt60`` seconds, scaled so that direct / tail energy is ``drr_db``.

    Args:
        sample_rate: Sampling rate (Hz).
        rt60: Reverberation time (s).
        drr_db: Direct-to-reverberant energy ratio (dB).
        rng: Random generator (draws the tail).
        predelay_s: Gap between the direct sound and the tail (s).

    Returns:
        ``[round(rt60 * sample_rate)]`` float64 impulse response.
    """
    n = max(2, round(rt60 * sample_rate))
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * np.exp(-math.log(1000.0) * t / rt60)
    tail[: max(1, round(predelay_s * sample_rate))] = 0.0
    tail *= math.sqrt(10.0 ** (-drr_db / 10.0) / float(np.sum(tail * tail)))
    tail[0] = 1.0
    return np.asarray(tail)


def reverberate(x: np.ndarray, impulse_response: np.ndarray) -> np.ndarray:
    """Causal convolution, cut to the input's length (the tail past the window is lost).

    Args:
        x: Mono signal.
        impulse_response: Room impulse response, ``h[0]`` = the direct path.

    Returns:
        ``y[t] = sum_k h[k] x[t - k]`` for ``t < len(x)``, float64.
    """
    signal = optional_import("scipy.signal")
    x = np.asarray(x, dtype=np.float64)
    return np.asarray(signal.fftconvolve(x, impulse_response)[: len(x)])


def coloured_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with a ``1/f^exponent`` power spectrum (0 white, 1 pink, 2 brown).

    Args:
        n: Samples.
        exponent: Spectral exponent.
        rng: Random generator.

    Returns:
        ``[n]`` float64 with zero mean and unit variance.
    """
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0
    spectrum *= f ** (-exponent / 2.0)
    spectrum[0] = 0.0
    x = np.fft.irfft(spectrum, n)
    return np.asarray(x / (x.std() + 1e-12))


def babble_noise(n: int, sample_rate: int, talkers: int, rng: np.random.Generator) -> np.ndarray:
    """Babble-like noise: speech-band noise under syllable-rate envelopes, several voices.

    Each voice is noise band-passed to 200-3000 Hz, amplitude-modulated by the magnitude of a
    4 Hz low-passed noise (its syllables; drawn at 100 Hz and interpolated). It carries no
    words, so no digit.

    Args:
        n: Samples.
        sample_rate: Sampling rate (Hz).
        talkers: Number of voices.
        rng: Random generator (draws the carriers, then the envelopes).

    Returns:
        ``[n]`` float64 with unit variance.
    """
    signal = optional_import("scipy.signal")
    warm = 1024  # discard the band-pass filter's start-up
    carrier_sos = _butter(2, (200.0, 3000.0), "bandpass", float(sample_rate))
    carriers = signal.sosfilt(carrier_sos, rng.standard_normal((talkers, n + warm)), axis=1)
    env_rate, env_warm = 100.0, 50  # envelopes at 100 Hz, half a second of start-up
    m = math.ceil(n * env_rate / sample_rate) + 1
    envelope_sos = _butter(2, 4.0, "lowpass", env_rate)
    slow = signal.sosfilt(envelope_sos, rng.standard_normal((talkers, m + env_warm)), axis=1)
    t = np.arange(n) * (env_rate / sample_rate)
    envelopes = np.abs([np.interp(t, np.arange(m), row[env_warm:]) for row in slow])
    voices = carriers[:, warm:] * envelopes
    out = (voices / (voices.std(axis=1, keepdims=True) + 1e-12)).sum(axis=0)
    return np.asarray(out / (out.std() + 1e-12))


def street_noise(
    n: int,
    sample_rate: int,
    rng: np.random.Generator,
    *,
    exponent: float,
    babble_share: float,
    talkers: int,
) -> np.ndarray:
    """Street noise: coloured noise (traffic rumble) plus babble-like noise (passers-by).

    Args:
        n: Samples.
        sample_rate: Sampling rate (Hz).
        rng: Random generator (draws the coloured part, then the babble).
        exponent: Spectral exponent of the coloured part.
        babble_share: Share of the power from the babble part, in [0, 1].
        talkers: Babble voices.

    Returns:
        ``[n]`` float64 with unit variance (approximately; the two parts are independent).
    """
    rumble = coloured_noise(n, exponent, rng)
    babble = babble_noise(n, sample_rate, talkers, rng)
    return np.asarray(math.sqrt(1.0 - babble_share) * rumble + math.sqrt(babble_share) * babble)


def add_noise(
    x: np.ndarray, noise: np.ndarray, snr_db: float, signal_power: float | None = None
) -> np.ndarray:
    """Adds ``noise`` scaled to a signal-to-noise ratio.

    Args:
        x: Signal.
        noise: Noise, same length (any scale).
        snr_db: Wanted ``10 log10(signal_power / noise power)``.
        signal_power: Reference power; ``mean(x**2)`` by default.

    Returns:
        ``x + s * noise`` with ``mean((s * noise)**2) = signal_power / 10**(snr_db / 10)``.
    """
    x = np.asarray(x, dtype=np.float64)
    power = float(np.mean(x * x)) if signal_power is None else float(signal_power)
    noise_power = float(np.mean(np.asarray(noise, dtype=np.float64) ** 2))
    scale = math.sqrt(power / 10.0 ** (snr_db / 10.0) / max(noise_power, 1e-30))
    return np.asarray(x + scale * np.asarray(noise, dtype=np.float64))


def apply_condition(
    condition: str,
    utterance: np.ndarray,
    rng: np.random.Generator,
    cfg: AcousticConfig,
) -> np.ndarray:
    """Records an utterance under a condition: window, channel, then noise.

    The utterance is put at a random offset of a silent ``window_s`` window with a random gain,
    passed through the condition's channel, and noise is added at an SNR drawn from
    ``cfg.snr_db``, measured against the channel's output over the utterance's span.

    Args:
        condition: A key of :data:`CONDITIONS`.
        utterance: Mono speech at ``cfg.sample_rate`` (truncated if longer than the window).
        rng: Random generator (draws offset, gain, the channel's parameters, SNR, noise).
        cfg: Build parameters.

    Returns:
        The recorded window, float64.

    Raises:
        ValueError: If the condition is unknown.
    """
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; choose from {list(CONDITIONS)}")
    sr = cfg.sample_rate
    n = round(cfg.window_s * sr)
    u = np.asarray(utterance[:n], dtype=np.float64)
    start = int(rng.integers(0, n - len(u) + 1))
    gain = rng.uniform(*cfg.gain)
    x = np.zeros(n)
    x[start : start + len(u)] = gain * u
    if condition == "phone":
        x = telephone(
            x,
            sr,
            band=cfg.phone_band,
            narrow_rate=cfg.phone_rate,
            threshold_db=cfg.compress_threshold_db,
            ratio=cfg.compress_ratio,
        )
    elif condition == "room":
        rt60 = rng.uniform(*cfg.rt60)
        drr = rng.uniform(*cfg.drr_db)
        x = reverberate(x, room_impulse_response(sr, rt60, drr, rng))
    snr = rng.uniform(*cfg.snr_db)
    exponent = rng.uniform(*cfg.noise_exponent)
    if condition == "street":
        noise = street_noise(
            n,
            sr,
            rng,
            exponent=exponent,
            babble_share=rng.uniform(*cfg.babble_share),
            talkers=cfg.babble_talkers,
        )
    else:
        noise = coloured_noise(n, exponent, rng)
    span = x[start : start + len(u)]
    power = float(np.mean(span * span)) if len(u) else 1e-6
    return add_noise(x, noise, snr, power)


# --------------------------------------------------------------------------------------------
# build


def build_acoustic(
    cfg: AcousticConfig, *, workers: int = 1, progress: Callable[[str], None] | None = None
) -> tuple[FeatureMeta, dict[str, dict[str, dict[str, np.ndarray]]]]:
    """Builds AV-Digits-DG acoustic in memory.

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
    plans = [plan_domain(labels, cfg.voice, rng, cfg) for _ in cfg.domains]
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
            audio[i] = quantize(log_mel(apply_condition(domain, wav, rng, cfg), cfg), cfg.quantum)
            image = images[rng.choice(pools[d][labels[i]])]
            style = CONDITIONS[domain].style
            vision[i] = quantize(style_image(image, style, rng, cfg), cfg.quantum)
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


def _meta(cfg: AcousticConfig) -> FeatureMeta:
    return audio_vision_meta(
        cfg,
        name="av-digits-dg-acoustic",
        module="mmdg.acoustic",
        audio_extractor="espeak-ng en word, recording condition, 16 kHz, log-mel, z-scored",
        about={"conditions": {d: CONDITIONS[d].description for d in cfg.domains}},
    )


def write_acoustic(
    out: str | Path,
    cfg: AcousticConfig,
    *,
    workers: int = 1,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Builds AV-Digits-DG acoustic and writes it as a feature-layout folder.

    Args:
        out: Output folder.
        cfg: Build parameters.
        workers: Processes used for speech synthesis (does not change the output).
        progress: Called with a short message after each stage.

    Returns:
        The folder written.
    """
    from ..features import write_feature_dataset

    meta, data = build_acoustic(cfg, workers=workers, progress=progress)
    return write_feature_dataset(out, meta, data)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m mmdg.acoustic",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the build (default 0)")
    parser.add_argument(
        "--pairs",
        type=int,
        default=10 * AcousticConfig.pairs_per_class * len(AcousticConfig.domains),
        help="total pairs over all domains and classes, a multiple of 10 x number of domains "
        "(default %(default)s, the shipped size)",
    )
    parser.add_argument(
        "--domains",
        nargs="+",
        default=list(AcousticConfig.domains),
        choices=list(CONDITIONS),
        help="recording conditions (default: all four)",
    )
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=AcousticConfig.test_fraction,
        help="share of each (domain, class) in the test split (default %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="synthesis processes (the output does not depend on it)",
    )
    parser.add_argument(
        "--quantum",
        type=float,
        default=AcousticConfig.quantum,
        help="rounding step of the stored features, 0 = none (default %(default)s)",
    )
    args = parser.parse_args(argv)
    per_class, rest = divmod(args.pairs, 10 * len(args.domains))
    if rest or per_class < 2:
        parser.error(f"--pairs must be a multiple of {10 * len(args.domains)} (at least 2 each)")
    cfg = AcousticConfig(
        pairs_per_class=per_class,
        domains=tuple(args.domains),
        seed=args.seed,
        test_fraction=args.test_fraction,
        quantum=args.quantum,
    )
    out = write_acoustic(args.out, cfg, workers=args.workers, progress=print)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
