"""One training run of the MMDG example: a config, a held-out domain, a seed.

The method comes from the config (``gradsurgery.build``); the loop is the same for all:

* ``cls`` objective: fused cross-entropy + ``loss.unimodal`` × the per-modality heads'
  cross-entropies (with ``loss.unimodal = 0`` the heads are trained as linear probes on
  detached features and do not touch the encoders);
* ``dom`` objective: ``loss.domain`` × the discriminator's cross-entropy on source-domain
  labels, behind a gradient-reversal layer of coefficient ``model.reversal`` (absent when
  ``loss.domain`` is 0);
* methods with one objective (OGM-GE) receive ``cls + dom`` as ``loss``;
* signals: per modality, the batch-mean true-class probability (from the modality's own head,
  ``signals: heads``, or from its slice of the fusion classifier, ``signals: split``) and the
  batch-mean true-domain probability from its slice of the linear discriminator.

Model selection uses the sources' validation split only; the held-out domain is scored at the
epoch with the best source-validation accuracy.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib
import torch
from torch import nn

import gradsurgery as gs
from gradsurgery.signals import split_linear_logits, true_class_confidence

from .features import DGSplits, MMDGSplit
from .model import MMDGNet, Outputs

__all__ = ["RunConfig", "RunResult", "evaluate", "load_config", "robustness", "train_run"]

_DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {"hidden": 128, "feat": 64, "reversal": 1.0, "dropout": 0.0},
    "loss": {"unimodal": 1.0, "domain": 1.0},
    "train": {"epochs": 20, "batch_size": 64, "lr": 1e-3, "weight_decay": 0.0},
}


@dataclass
class RunConfig:
    """A training configuration, as read from YAML or TOML.

    Attributes:
        name: Label of the run in tables and plots.
        method: ``gradsurgery.build`` config (a name or ``{"method": name, **hyper}``).
        model: ``MMDGNet`` keyword arguments (``hidden``, ``feat``, ``reversal``, ``dropout``).
        loss: Weights ``unimodal`` and ``domain``.
        train: ``epochs``, ``batch_size``, ``lr``, ``weight_decay``.
        signals: ``"heads"`` or ``"split"``: where semantic confidences come from.
        modalities: Modalities to use (``None``: all); one modality = a unimodal baseline.
    """

    name: str
    method: str | dict[str, Any] = "sum"
    model: dict[str, Any] = field(default_factory=dict)
    loss: dict[str, float] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    signals: str = "heads"
    modalities: list[str] | None = None

    def __post_init__(self) -> None:
        for key, defaults in _DEFAULTS.items():
            given = getattr(self, key)
            unknown = sorted(set(given) - set(defaults))
            if unknown:
                raise ValueError(
                    f"config {self.name!r}: unknown {key} keys {unknown}; valid: {sorted(defaults)}"
                )
            setattr(self, key, {**defaults, **given})
        if self.signals not in ("heads", "split"):
            raise ValueError(f"config {self.name!r}: signals must be 'heads' or 'split'")
        gs.build(self.method)  # fail early on a bad method config

    def with_overrides(self, **train: Any) -> RunConfig:
        """A copy with some ``train`` entries replaced (e.g. fewer epochs for a smoke run)."""
        out = copy.deepcopy(self)
        out.train.update({k: v for k, v in train.items() if v is not None})
        return out


def load_config(path: str | Path) -> RunConfig:
    """Read a ``.yaml``/``.yml`` or ``.toml`` config; ``name`` defaults to the file stem."""
    path = Path(path)
    if path.suffix == ".toml":
        raw = tomllib.loads(path.read_text())
    elif path.suffix in (".yaml", ".yml"):
        import yaml

        raw = yaml.safe_load(path.read_text())
    else:
        raise ValueError(f"{path}: config files must be .yaml, .yml or .toml")
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    raw.setdefault("name", path.stem)
    known = {"name", "method", "model", "loss", "train", "signals", "modalities"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; valid: {sorted(known)}")
    return RunConfig(**raw)


@dataclass
class RunResult:
    """What one run measured.

    Attributes:
        config: The config's name.
        target: Held-out domain.
        seed: Seed.
        val: Source-validation accuracy at the selected epoch: ``fused`` and per modality.
        test: Held-out accuracy at the selected epoch: ``fused`` and per modality.
        best_epoch: The selected epoch (best source-validation fused accuracy).
        trajectory: Per epoch, the means of each modality's ratios and coefficients.
        seconds: Training time.
        robust: Held-out fused accuracy at the selected epoch with one modality missing
            (``missing:<m>``: its features replaced by zeros) or corrupted
            (``noisy:<m>``: Gaussian noise of the features' own standard deviation added).
    """

    config: str
    target: str
    seed: int
    val: dict[str, float]
    test: dict[str, float]
    best_epoch: int
    trajectory: list[dict[str, float]]
    seconds: float
    robust: dict[str, float] = field(default_factory=dict)


def _to(split: MMDGSplit, modalities: Sequence[str], device: torch.device) -> MMDGSplit:
    return MMDGSplit(
        features={m: split.features[m].to(device) for m in modalities},
        mask=split.mask,
        label=split.label.to(device),
        domain=split.domain.to(device),
        sample_id=split.sample_id,
        domains=split.domains,
        classes=split.classes,
    )


@torch.no_grad()
def robustness(model: MMDGNet, split: MMDGSplit, seed: int = 0) -> dict[str, float]:
    """Fused accuracy with each modality missing or corrupted at test time (see RunResult)."""
    if len(model.modalities) < 2:
        return {}
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for m in model.modalities:
        clean = split.features[m]
        noise = torch.randn(clean.shape, generator=gen).to(clean) * clean.float().std()
        for kind, changed in (("missing", torch.zeros_like(clean)), ("noisy", clean + noise)):
            split.features[m] = changed
            out[f"{kind}:{m}"] = evaluate(model, split)["fused"]
        split.features[m] = clean
    return out


@torch.no_grad()
def evaluate(model: MMDGNet, split: MMDGSplit, batch_size: int = 1024) -> dict[str, float]:
    """Accuracy of the fused classifier and of each modality's head on a split."""
    model.eval()
    correct = {"fused": 0, **{m: 0 for m in model.modalities}}
    for start in range(0, len(split), batch_size):
        x = {m: split.features[m][start : start + batch_size] for m in model.modalities}
        y = split.label[start : start + batch_size]
        out = model(x)
        correct["fused"] += int((out.fused.argmax(1) == y).sum())
        for m in model.modalities:
            correct[m] += int((out.unimodal[m].argmax(1) == y).sum())
    model.train()
    return {k: v / max(len(split), 1) for k, v in correct.items()}


def _signals(
    model: MMDGNet, out: Outputs, y: torch.Tensor, d: torch.Tensor, source: str
) -> dict[str, dict[str, torch.Tensor]]:
    if source == "heads":
        sem = {m: true_class_confidence(out.unimodal[m], y) for m in model.modalities}
    else:
        logits = split_linear_logits(out.features, model.classifier)
        sem = {m: true_class_confidence(v, y) for m, v in logits.items()}
    signals: dict[str, dict[str, torch.Tensor]] = {m: {"cls": sem[m]} for m in sem}
    if model.discriminator is not None:
        for m, v in split_linear_logits(out.features, model.discriminator).items():
            signals[m]["dom"] = true_class_confidence(v, d)
    return signals


def _ratios(values: Mapping[str, float], *, inverse: bool = False) -> dict[str, float]:
    """Each modality's value against the mean of the others (GMP's Eq. 8; ``inverse`` for σ).

    Logged for every method, so joint training shows the imbalance GMP reacts to."""
    out = {}
    for m, mine in values.items():
        others = [v for n, v in values.items() if n != m]
        mean = sum(others) / len(others)
        out[m] = (mean / (mine + 1e-6)) if inverse else (mine / (mean + 1e-6))
    return out


def _log_step(
    signals: Mapping[str, Mapping[str, torch.Tensor]], report: gs.Report
) -> dict[str, float]:
    values = {m: {o: float(v) for o, v in s.items()} for m, s in signals.items()}
    row: dict[str, float] = {}
    if len(values) > 1:
        rho = _ratios({m: v["cls"] for m, v in values.items()})
        row.update({f"rho/{m}": r for m, r in rho.items()})
        if all("dom" in v for v in values.values()):
            sigma = _ratios({m: v["dom"] for m, v in values.items()}, inverse=True)
            row.update({f"sigma/{m}": s for m, s in sigma.items()})
    for m, block in report.blocks.items():
        for key in ("rho", "sigma"):  # a method's own ratios win over the recomputed ones
            if isinstance(block.details.get(key), float):
                row[f"{key}/{m}"] = block.details[key]
        for key in ("k", "p"):
            if key in block.details:
                row[f"{key}/{m}"] = float(block.details[key])
        row[f"projected/{m}"] = float(bool(block.projected))
        if block.conflict is not None:
            row[f"conflict/{m}"] = float(bool(block.conflict.any()))
    return row


def train_run(
    cfg: RunConfig,
    splits: DGSplits,
    *,
    seed: int,
    device: str | torch.device = "cpu",
) -> RunResult:
    """Train one model with one method on the sources and score it on the held-out domain.

    Args:
        cfg: The configuration.
        splits: Train / validation (sources) and test (held-out target) sets.
        seed: Seeds the model's initialisation, the batch order and the method.
        device: ``"cpu"`` or ``"cuda"``.

    Returns:
        The run's accuracies and trajectories.
    """
    device = torch.device(device)
    modalities = list(cfg.modalities or splits.train.features)
    missing = [m for m in modalities if m not in splits.train.features]
    if missing:
        raise ValueError(f"config {cfg.name!r}: modalities {missing} are not in the data")
    train, val, test = (_to(s, modalities, device) for s in (splits.train, splits.val, splits.test))
    if len(train) < cfg.train["batch_size"]:
        raise ValueError(
            f"config {cfg.name!r}: batch_size {cfg.train['batch_size']} is larger than the "
            f"{len(train)} training rows; no step would be taken"
        )
    torch.manual_seed(seed)
    in_dims = {m: int(train.features[m][0].numel()) for m in modalities}
    model = MMDGNet(in_dims, len(train.classes), len(splits.sources), **cfg.model).to(device)
    method = gs.build(cfg.method)
    seeded = isinstance(cfg.method, Mapping) and "seed" in cfg.method
    if not seeded and "seed" in type(method).hyperparameter_names():
        method = gs.build(cfg.method, seed=seed)  # the run's seed also drives the method
    single_objective = method.max_objectives == 1
    hp = cfg.train
    opt = torch.optim.Adam(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    gen = torch.Generator().manual_seed(seed)
    blocks = {m: list(model.encoders[m].parameters()) for m in modalities}
    ce = nn.functional.cross_entropy
    probe = cfg.loss["unimodal"] == 0
    best: tuple[float, int, dict[str, float], dict[str, float], dict[str, float]]
    best = (-1.0, 0, {}, {}, {})
    trajectory = []
    start = time.perf_counter()
    for epoch in range(hp["epochs"]):
        method.set_epoch(epoch)
        order = torch.randperm(len(train), generator=gen).to(device)
        rows: list[dict[str, float]] = []
        for i in range(0, len(train) - hp["batch_size"] + 1, hp["batch_size"]):
            idx = order[i : i + hp["batch_size"]]
            x = {m: train.features[m][idx] for m in modalities}
            y, d = train.label[idx], train.domain[idx]
            out = model(x, probe_heads=probe)
            uni = sum(ce(out.unimodal[m], y) for m in modalities)
            cls = ce(out.fused, y) + (uni if probe else cfg.loss["unimodal"] * uni)
            losses = {"cls": cls}
            if out.domain is not None and cfg.loss["domain"] > 0:
                losses["dom"] = cfg.loss["domain"] * ce(out.domain, d)
            signals = _signals(model, out, y, d, cfg.signals)
            method_signals: dict[str, dict[str, torch.Tensor]] = signals
            if single_objective:
                losses = {"loss": sum(losses.values())}
                method_signals = {m: {"loss": s["cls"]} for m, s in signals.items()}
            opt.zero_grad(set_to_none=True)
            report = gs.backward(losses, blocks, method, method_signals, diagnostics=True)
            opt.step()
            rows.append(_log_step(signals, report))
        trajectory.append({k: sum(r[k] for r in rows) / len(rows) for k in rows[0]} if rows else {})
        val_acc = evaluate(model, val)
        if val_acc["fused"] > best[0]:
            best = (
                val_acc["fused"],
                epoch,
                val_acc,
                evaluate(model, test),
                robustness(model, test, seed),
            )
    return RunResult(
        config=cfg.name,
        target=splits.target,
        seed=seed,
        val=best[2],
        test=best[3],
        best_epoch=best[1],
        robust=best[4],
        trajectory=trajectory,
        seconds=time.perf_counter() - start,
    )
