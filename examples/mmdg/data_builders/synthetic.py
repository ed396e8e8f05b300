"""Synthetic, controllable MMDG data for property and regression tests.

For modality ``m``, domain ``e`` and class ``c`` (latent size ``r``, feature size ``D_m``)::

    S_m[c]      ~ N(0, I_r)                        shared class prototype (all domains)
    P_m,e[c]    ~ N(0, I_r)                        private prototype (one per domain)
    mu_m,e[c]   = signal_m * unit(sqrt(1 - g_m) S_m[c] + sqrt(g_m) P_m,e[c]),  g_m = specificity_m
    b_m,e       ~ offset_m * 4 / sqrt(D_m) * N(0, I_Dm)   class-independent domain offset
    x_m         = A_m mu_m,e[y] + b_m,e + noise_m * eps,   A_m a fixed orthonormal D_m x r lift

``specificity`` 0 makes the class cue identical in every domain, 1 re-draws it per domain (useless
on an unseen domain). All random draws happen in a fixed order whose shapes depend only on the
sizes (never on ``signal`` / ``specificity`` / ``offset`` / ``noise``), so for one seed the knobs
change the data only through the formulas above.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..features import FeatureMeta, ModalitySpec, write_feature_dataset

__all__ = [
    "SyntheticMMDG",
    "make_synthetic_mmdg",
    "synthetic_feature_data",
    "write_synthetic_dataset",
]

Knob = float | Sequence[float]


@dataclass
class SyntheticMMDG:
    """Generated data and the hidden quantities behind it.

    Attributes:
        modalities: Modality names, in order.
        domains: Domain names, in order.
        data: ``data[domain]`` maps each modality to ``[n, D_m]`` float32 and ``"label"`` to
            ``[n]`` int64.
        class_means: ``class_means[domain][modality]`` is ``[C, D_m]``: ``A_m mu_m,e[c] + b_m,e``.
    """

    modalities: tuple[str, ...]
    domains: tuple[str, ...]
    data: dict[str, dict[str, np.ndarray]]
    class_means: dict[str, dict[str, np.ndarray]]


def _per_modality(value: Knob, k: int, name: str) -> tuple[float, ...]:
    if isinstance(value, int | float | np.number):
        values: tuple[float, ...] = (float(value),) * k
    else:
        values = tuple(map(float, value))
    if len(values) != k:
        raise ValueError(f"{name} needs one value per modality ({k}), got {len(values)}")
    return values


def _unit(v: np.ndarray) -> np.ndarray:
    return np.asarray(v / np.linalg.norm(v, axis=-1, keepdims=True))


def make_synthetic_mmdg(
    *,
    dims: Sequence[int] = (64, 64),
    modalities: Sequence[str] | None = None,
    n_domains: int = 4,
    n_classes: int = 10,
    n_per_domain: int = 1000,
    latent: int = 16,
    signal: Knob = (6.0, 3.0),
    specificity: Knob = (0.9, 0.0),
    offset: Knob = 1.0,
    noise: Knob = 1.0,
    seed: int | np.random.Generator = 0,
) -> SyntheticMMDG:
    """Draws a synthetic multi-domain, multimodal classification dataset.

    The defaults are the "imbalance" setting: modality 1 strong but domain-specific, modality
    2 weaker but shared across domains.

    Args:
        dims: Feature size ``D_m`` per modality (the number of modalities is ``len(dims)``).
        modalities: Modality names; ``m1, m2, ...`` by default.
        n_domains: Number of domains, named ``d0, d1, ...``.
        n_classes: Number of classes; labels are uniform.
        n_per_domain: Samples per domain.
        latent: Latent size ``r`` (``<= min(dims)``).
        signal: Norm of the class means, per modality (or one value for all).
        specificity: Domain-specificity ``g_m`` in [0, 1] of the class cue.
        offset: Scale of the class-independent domain offset.
        noise: Standard deviation of the isotropic feature noise.
        seed: Seed or ``numpy.random.Generator``; the only source of randomness.

    Returns:
        The samples per domain plus the true class means.

    Raises:
        ValueError: On inconsistent sizes or knobs out of range.
    """
    k = len(dims)
    names = tuple(modalities) if modalities is not None else tuple(f"m{i + 1}" for i in range(k))
    if k == 0 or len(names) != k or len(set(names)) != k:
        raise ValueError(f"need one distinct name per modality, got {names} for dims {dims}")
    if min(n_domains, n_classes, n_per_domain, latent) < 1 or latent > min(dims):
        raise ValueError("sizes must be positive and latent <= min(dims)")
    sig = _per_modality(signal, k, "signal")
    spec = _per_modality(specificity, k, "specificity")
    off = _per_modality(offset, k, "offset")
    noi = _per_modality(noise, k, "noise")
    if not all(0.0 <= g <= 1.0 for g in spec) or min(noi) < 0 or min(off) < 0:
        raise ValueError("specificity must be in [0, 1]; noise and offset must be >= 0")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    domains = tuple(f"d{e}" for e in range(n_domains))

    shared = [rng.standard_normal((n_classes, latent)) for _ in range(k)]
    lift = [np.linalg.qr(rng.standard_normal((d, latent)))[0] for d in dims]
    private = [[rng.standard_normal((n_classes, latent)) for _ in range(k)] for _ in domains]
    shift = [[rng.standard_normal(d) for d in dims] for _ in domains]

    data: dict[str, dict[str, np.ndarray]] = {}
    means: dict[str, dict[str, np.ndarray]] = {}
    for e, domain in enumerate(domains):
        y = rng.integers(0, n_classes, size=n_per_domain)
        data[domain] = {"label": y.astype(np.int64)}
        means[domain] = {}
        for m, name in enumerate(names):
            eps = rng.standard_normal((n_per_domain, dims[m]))
            mu = sig[m] * _unit(np.sqrt(1 - spec[m]) * shared[m] + np.sqrt(spec[m]) * private[e][m])
            b = off[m] * 4.0 / np.sqrt(dims[m]) * shift[e][m]
            centers = mu @ lift[m].T + b
            means[domain][name] = centers.astype(np.float32)
            data[domain][name] = (centers[y] + noi[m] * eps).astype(np.float32)
    return SyntheticMMDG(names, domains, data, means)


def synthetic_feature_data(
    synth: SyntheticMMDG, *, test_fraction: float = 0.2
) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Splits each domain into ``train`` / ``test`` arrays of the feature layout.

    The first ``round((1 - test_fraction) * n)`` rows of a domain go to ``train``, the rest to
    ``test`` (rows are already i.i.d.). Sample ids are ``"{domain}-{row}"``.

    Args:
        synth: Output of :func:`make_synthetic_mmdg`.
        test_fraction: Fraction of each domain put in ``test``.

    Returns:
        ``data[domain][split][key]``, ready for :func:`write_feature_dataset`.
    """
    out = {}
    for domain, arrays in synth.data.items():
        n = len(arrays["label"])
        cut = round((1.0 - test_fraction) * n)
        ids = np.array([f"{domain}-{i}" for i in range(n)])
        parts = {"train": slice(0, cut), "test": slice(cut, n)}
        out[domain] = {
            split: {**{k: v[sl] for k, v in arrays.items()}, "sample_id": ids[sl]}
            for split, sl in parts.items()
        }
    return out


def write_synthetic_dataset(
    root: str | Path,
    *,
    test_fraction: float = 0.2,
    dtype: str = "float32",
    name: str = "synthetic-mmdg",
    target_splits: Sequence[str] = ("test",),
    **knobs: object,
) -> Path:
    """Generates a synthetic dataset and writes it in the feature layout.

    Args:
        root: Output folder.
        test_fraction: Fraction of each domain put in the ``test`` split.
        dtype: Stored feature dtype (``"float16"`` or ``"float32"``).
        name: Dataset name in ``meta.json``.
        target_splits: Splits of a held-out domain that are evaluated.
        **knobs: Keyword arguments of :func:`make_synthetic_mmdg`; the JSON-serialisable ones
            are recorded under ``"generator"`` in ``meta.json``.

    Returns:
        The folder written.
    """
    synth = make_synthetic_mmdg(**knobs)  # type: ignore[arg-type]
    n_classes = int(knobs.get("n_classes", 10))  # type: ignore[call-overload]
    first = synth.data[synth.domains[0]]
    meta = FeatureMeta(
        name=name,
        classes=tuple(str(c) for c in range(n_classes)),
        domains=synth.domains,
        modalities={
            m: ModalitySpec((first[m].shape[1],), dtype, extractor="synthetic")
            for m in synth.modalities
        },
        target_splits=tuple(target_splits),
        extra={
            "generator": {
                "module": "mmdg.synthetic",
                "test_fraction": test_fraction,
                **{
                    k: (list(v) if isinstance(v, tuple) else v)
                    for k, v in knobs.items()
                    if isinstance(v, int | float | str | list | tuple)
                },
            }
        },
    )
    return write_feature_dataset(
        root, meta, synthetic_feature_data(synth, test_fraction=test_fraction)
    )
