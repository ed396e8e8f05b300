"""Feature layout v1: per-modality pre-extracted features for MMDG.

A dataset is a folder::

    ROOT/meta.json
    ROOT/{domain}/{split}.npz

``meta.json`` declares the classes, domains, splits and, per modality, the feature shape and
dtype. Each ``.npz`` holds ``label`` (int64 ``[N]``), ``sample_id`` (unicode ``[N]``), one float
array ``[N, *shape]`` per modality and optionally a bool ``mask_<modality>`` ``[N]`` (False =
modality missing for that row). A modality declared with ``"multiview": true`` stores
``[N, V, *D]`` and is averaged over the view axis when loaded.

Domain labels are not stored: when splits are loaded, the domain label of a row is the index of
its domain in the requested domain list.

Example:
    >>> splits = load_dg_splits(root, target="D1")  # doctest: +SKIP
    >>> splits.train.features["audio"].shape  # doctest: +SKIP
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "FORMAT",
    "VERSION",
    "DGSplits",
    "FeatureFormatError",
    "FeatureMeta",
    "MMDGSplit",
    "ModalitySpec",
    "leave_one_domain_out",
    "load_dg_splits",
    "load_split",
    "parse_meta",
    "read_meta",
    "validate_arrays",
    "write_feature_dataset",
]

FORMAT = "gradsurgery-mmdg-features"
VERSION = 1
META_FILE = "meta.json"
FLOAT_DTYPES = ("float16", "float32")


class FeatureFormatError(ValueError):
    """A feature-layout file does not follow format v1."""


@dataclass(frozen=True)
class ModalitySpec:
    """Declared layout of one modality.

    Attributes:
        shape: Per-row shape; with ``multiview`` the first axis is the view axis.
        dtype: ``"float16"`` or ``"float32"``.
        multiview: Whether the first axis of ``shape`` holds views to average at load time.
        extractor: Free-text description of how the features were produced.
    """

    shape: tuple[int, ...]
    dtype: str = "float16"
    multiview: bool = False
    extractor: str = ""

    def to_json(self) -> dict[str, Any]:
        """Returns the ``meta.json`` entry of this modality."""
        out: dict[str, Any] = {"shape": list(self.shape), "dtype": self.dtype}
        if self.multiview:
            out["multiview"] = True
        if self.extractor:
            out["extractor"] = self.extractor
        return out


@dataclass(frozen=True)
class FeatureMeta:
    """Parsed and validated ``meta.json``.

    Attributes:
        name: Dataset name.
        classes: Class names; labels index this tuple.
        domains: Domain names; each has one folder.
        splits: Split names; each domain folder has one ``{split}.npz`` per split.
        modalities: Modality name -> declared layout, in file order.
        target_splits: Splits of a held-out domain that are evaluated.
        extra: Any other top-level keys (e.g. generator parameters), kept verbatim.
    """

    name: str
    classes: tuple[str, ...]
    domains: tuple[str, ...]
    modalities: dict[str, ModalitySpec]
    splits: tuple[str, ...] = ("train", "test")
    target_splits: tuple[str, ...] = ("test",)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Returns the ``meta.json`` content."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "classes": list(self.classes),
            "domains": list(self.domains),
            "splits": list(self.splits),
            "modalities": {k: v.to_json() for k, v in self.modalities.items()},
            "target_splits": list(self.target_splits),
            **self.extra,
        }


@dataclass
class MMDGSplit:
    """Rows of one or more (domain, split) files, as tensors.

    Attributes:
        features: Modality -> float tensor ``[N, *shape]`` (views already averaged).
        mask: Modality -> bool tensor ``[N]``; all True where the file has no mask.
        label: Class index, int64 ``[N]``.
        domain: Index of each row's domain in ``domains``, int64 ``[N]``.
        sample_id: Row identifiers, length ``N``.
        domains: The requested domain names, in domain-label order.
        classes: Class names.
    """

    features: dict[str, torch.Tensor]
    mask: dict[str, torch.Tensor]
    label: torch.Tensor
    domain: torch.Tensor
    sample_id: list[str]
    domains: tuple[str, ...]
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def subset(self, index: torch.Tensor | Sequence[int]) -> MMDGSplit:
        """Returns the rows selected by ``index`` (int indices or a bool mask)."""
        idx = torch.as_tensor(index)
        if idx.dtype == torch.bool:
            idx = idx.nonzero().flatten()
        return MMDGSplit(
            features={k: v[idx] for k, v in self.features.items()},
            mask={k: v[idx] for k, v in self.mask.items()},
            label=self.label[idx],
            domain=self.domain[idx],
            sample_id=[self.sample_id[i] for i in idx.tolist()],
            domains=self.domains,
            classes=self.classes,
        )


@dataclass
class DGSplits:
    """The three sets of one leave-one-domain-out run.

    Attributes:
        sources: Source domains; ``train.domain`` / ``val.domain`` index this tuple.
        target: Held-out domain.
        train: The sources' ``train`` split.
        val: The sources' ``test`` split (model selection).
        test: The target's ``target_splits`` (domain label 0).
    """

    sources: tuple[str, ...]
    target: str
    train: MMDGSplit
    val: MMDGSplit
    test: MMDGSplit


# --------------------------------------------------------------------------------------------
# meta.json


def _fail(where: Path | str, what: str) -> FeatureFormatError:
    return FeatureFormatError(f"{where}: {what}")


def _str_list(raw: dict[str, Any], key: str, where: Path) -> tuple[str, ...]:
    value = raw.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise _fail(where, f"key '{key}' must be a non-empty list of strings, got {value!r}")
    if len(set(value)) != len(value):
        raise _fail(where, f"key '{key}' has duplicate entries: {value!r}")
    return tuple(value)


def _parse_modality(name: str, raw: Any, where: Path) -> ModalitySpec:
    if not isinstance(raw, dict):
        raise _fail(where, f"modality '{name}' must be an object, got {raw!r}")
    shape = raw.get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)
    ):
        raise _fail(
            where, f"modality '{name}': 'shape' must be a list of positive ints, got {shape!r}"
        )
    dtype = raw.get("dtype", "float16")
    if dtype not in FLOAT_DTYPES:
        raise _fail(
            where, f"modality '{name}': 'dtype' must be one of {FLOAT_DTYPES}, got {dtype!r}"
        )
    multiview = raw.get("multiview", False)
    if not isinstance(multiview, bool) or (multiview and len(shape) < 2):
        raise _fail(where, f"modality '{name}': 'multiview' needs a bool and a shape [V, *D]")
    return ModalitySpec(tuple(shape), dtype, multiview, str(raw.get("extractor", "")))


def parse_meta(raw: Any, where: Path | str = META_FILE) -> FeatureMeta:
    """Validates a decoded ``meta.json`` object.

    Args:
        raw: The decoded JSON.
        where: Path used in error messages.

    Returns:
        The parsed metadata.

    Raises:
        FeatureFormatError: If the format tag, version or any field is wrong.
    """
    where = Path(where)
    if not isinstance(raw, dict):
        raise _fail(where, "top level must be a JSON object")
    if raw.get("format") != FORMAT:
        raise _fail(where, f"'format' must be {FORMAT!r}, got {raw.get('format')!r}")
    if raw.get("version") != VERSION:
        raise _fail(
            where,
            f"unsupported 'version' {raw.get('version')!r}; this loader reads version {VERSION}",
        )
    name = raw.get("name", "")
    if not isinstance(name, str):
        raise _fail(where, f"'name' must be a string, got {name!r}")
    classes = _str_list(raw, "classes", where)
    domains = _str_list(raw, "domains", where)
    splits = _str_list(raw, "splits", where)
    target_splits = _str_list(raw, "target_splits", where)
    unknown = [s for s in target_splits if s not in splits]
    if unknown:
        raise _fail(where, f"'target_splits' {unknown} are not in 'splits' {list(splits)}")
    mods = raw.get("modalities")
    if not isinstance(mods, dict) or not mods:
        raise _fail(where, "'modalities' must be a non-empty object")
    reserved = [m for m in mods if m in ("label", "sample_id") or m.startswith("mask_")]
    if reserved:
        raise _fail(where, f"modality names {reserved} clash with reserved npz keys")
    known = {
        "format",
        "version",
        "name",
        "classes",
        "domains",
        "splits",
        "modalities",
        "target_splits",
    }
    return FeatureMeta(
        name=name,
        classes=classes,
        domains=domains,
        splits=splits,
        modalities={k: _parse_modality(k, v, where) for k, v in mods.items()},
        target_splits=target_splits,
        extra={k: v for k, v in raw.items() if k not in known},
    )


def read_meta(root: str | Path) -> FeatureMeta:
    """Reads and validates ``ROOT/meta.json``.

    Args:
        root: Dataset folder.

    Returns:
        The parsed metadata.

    Raises:
        FeatureFormatError: If the file is missing, not JSON, or not format v1.
    """
    path = Path(root) / META_FILE
    if not path.is_file():
        raise _fail(path, "missing (is this a feature-layout folder?)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise _fail(path, f"not valid JSON ({err})") from err
    return parse_meta(raw, path)


# --------------------------------------------------------------------------------------------
# npz files


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise _fail(path, "missing")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise _fail(path, f"not a readable .npz file ({err})") from err
    out = {}
    with npz:
        for key in npz.files:
            try:
                out[key] = npz[key]
            except ValueError as err:
                raise _fail(
                    path,
                    f"key '{key}' holds a pickled object array; store plain numeric or unicode "
                    f"arrays (loading uses allow_pickle=False)",
                ) from err
    return out


def _check_vector(arr: np.ndarray | None, key: str, n: int | None, kinds: str, where: str) -> int:
    if arr is None:
        raise _fail(where, f"required key '{key}' is missing")
    if arr.ndim != 1 or arr.dtype.kind not in kinds:
        raise _fail(
            where,
            f"key '{key}' must be a 1-D array of kind {kinds!r}, "
            f"got dtype {arr.dtype} shape {arr.shape}",
        )
    if n is not None and arr.shape[0] != n:
        raise _fail(where, f"key '{key}' has {arr.shape[0]} rows, expected {n} (rows of 'label')")
    return int(arr.shape[0])


def validate_arrays(arrays: Mapping[str, np.ndarray], meta: FeatureMeta, where: str) -> None:
    """Checks the arrays of one ``{domain}/{split}.npz`` against ``meta``.

    Args:
        arrays: Key -> array, as stored in the file.
        meta: The dataset's metadata.
        where: Text naming the file, domain and split, used in error messages.

    Raises:
        FeatureFormatError: On a missing or unknown key, wrong dtype, wrong row count, wrong
            per-row shape, label out of range, duplicate sample ids or non-finite features.
    """
    n = _check_vector(arrays.get("label"), "label", None, "iu", where)
    _check_vector(arrays.get("sample_id"), "sample_id", n, "U", where)
    expected = {"label", "sample_id", *meta.modalities, *(f"mask_{m}" for m in meta.modalities)}
    unknown = sorted(set(arrays) - expected)
    if unknown:
        raise _fail(
            where, f"unknown keys {unknown}; declared modalities are {list(meta.modalities)}"
        )
    labels = arrays["label"]
    bad = (labels < 0) | (labels >= len(meta.classes))
    if bad.any():
        raise _fail(
            where,
            f"key 'label' has {int(bad.sum())} value(s) out of range "
            f"[0, {len(meta.classes)}), e.g. {int(labels[bad][0])}",
        )
    ids = arrays["sample_id"]
    if len(np.unique(ids)) != n:
        raise _fail(where, "key 'sample_id' has duplicate values")
    for name, spec in meta.modalities.items():
        arr = arrays.get(name)
        if arr is None:
            raise _fail(where, f"modality key '{name}' is missing")
        if arr.shape != (n, *spec.shape):
            raise _fail(
                where,
                f"modality key '{name}' has shape {arr.shape}, "
                f"expected {(n, *spec.shape)} (N rows x declared shape)",
            )
        if arr.dtype != np.dtype(spec.dtype):
            raise _fail(
                where, f"modality key '{name}' has dtype {arr.dtype}, declared {spec.dtype}"
            )
        mask = arrays.get(f"mask_{name}")
        if mask is not None:
            _check_vector(mask, f"mask_{name}", n, "b", where)
        present = arr if mask is None else arr[mask]
        if not np.isfinite(present).all():
            raise _fail(where, f"modality key '{name}' has non-finite values in present rows")


def _load_one(
    root: Path, meta: FeatureMeta, domain: str, split: str, modalities: Sequence[str]
) -> dict[str, np.ndarray]:
    if domain not in meta.domains:
        raise _fail(root / META_FILE, f"unknown domain '{domain}'; known: {list(meta.domains)}")
    if split not in meta.splits:
        raise _fail(root / META_FILE, f"unknown split '{split}'; known: {list(meta.splits)}")
    path = root / domain / f"{split}.npz"
    arrays = _read_npz(path)
    validate_arrays(arrays, meta, f"{path} (domain '{domain}', split '{split}')")
    keep = {"label", "sample_id", *modalities, *(f"mask_{m}" for m in modalities)}
    return {k: v for k, v in arrays.items() if k in keep}


def _to_tensor(arr: np.ndarray, spec: ModalitySpec, views: str, dtype: torch.dtype) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(arr)).to(dtype)
    if spec.multiview and views == "mean":
        x = x.mean(dim=1)
    return x


def load_split(
    root: str | Path,
    domains: Sequence[str] | str,
    splits: Sequence[str] | str,
    *,
    modalities: Sequence[str] | None = None,
    views: str = "mean",
    dtype: torch.dtype = torch.float32,
) -> MMDGSplit:
    """Loads and concatenates the given (domain, split) files.

    Args:
        root: Dataset folder.
        domains: Domain name(s); a row's domain label is its domain's index here.
        splits: Split name(s) read for every domain.
        modalities: Modalities to load; all declared ones by default.
        views: ``"mean"`` averages multi-view modalities over the view axis; ``"all"`` keeps it.
        dtype: Floating dtype of the returned features.

    Returns:
        The concatenated rows, domain by domain, split by split.

    Raises:
        FeatureFormatError: If any file breaks format v1 or a name is unknown.
    """
    root = Path(root)
    meta = read_meta(root)
    domains = (domains,) if isinstance(domains, str) else tuple(domains)
    splits = (splits,) if isinstance(splits, str) else tuple(splits)
    mods = tuple(meta.modalities) if modalities is None else tuple(modalities)
    unknown = [m for m in mods if m not in meta.modalities]
    if unknown:
        raise _fail(
            root / META_FILE, f"unknown modalities {unknown}; declared: {list(meta.modalities)}"
        )
    if views not in ("mean", "all"):
        raise ValueError(f"views must be 'mean' or 'all', got {views!r}")
    if not domains or len(set(domains)) != len(domains):
        raise ValueError(f"domains must be non-empty and distinct, got {list(domains)}")
    parts = [
        (d, _load_one(root, meta, dom, s, mods)) for d, dom in enumerate(domains) for s in splits
    ]
    features, mask = {}, {}
    for m in mods:
        spec = meta.modalities[m]
        features[m] = torch.cat([_to_tensor(p[m], spec, views, dtype) for _, p in parts])
        mask[m] = torch.cat(
            [
                torch.from_numpy(p.get(f"mask_{m}", np.ones(len(p["label"]), dtype=bool)))
                for _, p in parts
            ]
        )
    return MMDGSplit(
        features=features,
        mask=mask,
        label=torch.cat([torch.from_numpy(p["label"].astype(np.int64)) for _, p in parts]),
        domain=torch.cat([torch.full((len(p["label"]),), d, dtype=torch.int64) for d, p in parts]),
        sample_id=[str(s) for _, p in parts for s in p["sample_id"]],
        domains=domains,
        classes=meta.classes,
    )


def leave_one_domain_out(domains: Sequence[str]) -> list[tuple[tuple[str, ...], str]]:
    """Returns every (sources, target) pair of the leave-one-domain-out protocol.

    Args:
        domains: All domain names.

    Returns:
        One ``(sources, target)`` per domain, sources in their original order.
    """
    return [(tuple(d for d in domains if d != t), t) for t in domains]


def load_dg_splits(
    root: str | Path,
    target: str,
    sources: Sequence[str] | None = None,
    **kwargs: Any,
) -> DGSplits:
    """Loads train / val / test sets for one held-out target domain.

    Training uses the sources' ``train`` split, validation the sources' ``test`` split, and the
    target is scored on ``meta.target_splits``.

    Args:
        root: Dataset folder.
        target: Held-out domain.
        sources: Source domains; every other domain by default.
        **kwargs: Passed to :func:`load_split` (``modalities``, ``views``, ``dtype``).

    Returns:
        The three sets.

    Raises:
        FeatureFormatError: If a file breaks format v1.
        ValueError: If the target is also a source.
    """
    meta = read_meta(root)
    if target not in meta.domains:
        raise _fail(
            Path(root) / META_FILE, f"unknown target domain '{target}'; known: {list(meta.domains)}"
        )
    srcs = tuple(d for d in meta.domains if d != target) if sources is None else tuple(sources)
    if target in srcs:
        raise ValueError(f"target domain '{target}' is also a source: {list(srcs)}")
    return DGSplits(
        sources=srcs,
        target=target,
        train=load_split(root, srcs, "train", **kwargs),
        val=load_split(root, srcs, "test", **kwargs),
        test=load_split(root, [target], meta.target_splits, **kwargs),
    )


# --------------------------------------------------------------------------------------------
# writer


def write_feature_dataset(
    root: str | Path,
    meta: FeatureMeta,
    data: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]],
) -> Path:
    """Writes a feature-layout folder.

    Modality arrays are cast to their declared dtype; ``label`` to int64; ``sample_id`` to
    unicode. Every file is validated before anything is written.

    Args:
        root: Output folder (created if needed; existing files are overwritten).
        meta: Metadata; ``meta.domains`` and ``meta.splits`` say which files must exist.
        data: ``data[domain][split]`` maps npz keys to arrays.

    Returns:
        The folder written.

    Raises:
        FeatureFormatError: If ``data`` misses a (domain, split) or breaks the format.
    """
    root = Path(root)
    meta = parse_meta(meta.to_json(), "meta")  # re-validate what will be written
    files = {}
    for domain in meta.domains:
        for split in meta.splits:
            try:
                raw = data[domain][split]
            except KeyError:
                raise _fail(root, f"no arrays for domain '{domain}', split '{split}'") from None
            arrays = {k: _cast(k, np.asarray(v), meta) for k, v in raw.items()}
            where = f"{root / domain / (split + '.npz')} (domain '{domain}', split '{split}')"
            validate_arrays(arrays, meta, where)
            files[(domain, split)] = arrays
    extra = sorted(set(data) - set(meta.domains))
    if extra:
        raise _fail(root, f"data has domains {extra} that are not in meta.domains")
    root.mkdir(parents=True, exist_ok=True)
    (root / META_FILE).write_text(json.dumps(meta.to_json(), indent=2) + "\n", encoding="utf-8")
    for (domain, split), arrays in files.items():
        (root / domain).mkdir(exist_ok=True)
        np.savez_compressed(root / domain / f"{split}.npz", **arrays)  # type: ignore[arg-type]
    return root


def _cast(key: str, arr: np.ndarray, meta: FeatureMeta) -> np.ndarray:
    if key == "label" and arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if key == "sample_id":
        return arr.astype(str)
    if key in meta.modalities and arr.dtype.kind == "f":
        return arr.astype(meta.modalities[key].dtype)
    if key.startswith("mask_") and arr.dtype.kind in "biu":
        return arr.astype(bool)
    return arr
