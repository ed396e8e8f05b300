"""One training run of the MMDG example: a config, a held-out domain, a seed.

The method comes from the config (``gradsurgery.build``); the loop is the same for all. The
loss terms of a batch are:

* ``fused``: the fusion classifier's cross-entropy, plus ``loss.unimodal`` × the per-modality
  heads' cross-entropies (with ``loss.unimodal = 0`` the heads are trained as linear probes on
  detached features and do not touch the encoders);
* ``dom``: ``loss.domain`` × the discriminator's cross-entropy on source-domain labels, behind a
  gradient-reversal layer of coefficient ``model.reversal`` (absent when ``loss.domain`` is 0).

How the terms become the method's objectives, and which signals the method receives, follow
from what the method declares (`gradsurgery.Method.name`, ``max_objectives`` and
``needs_signals``, see `recipe_for`):

* two objectives ``cls`` and ``dom`` (the default; GMP, PCGrad, CAGrad, MGDA, plain sums);
* one objective ``loss = cls + dom`` for methods with ``max_objectives == 1`` (OGM-GE, AGM,
  CGGM);
* MMPareto: ``mm`` (fused + adversarial) and one ``uni_<m>`` per modality head;
* PMR: ``cls``, ``dom`` and one prototypical cross-entropy ``proto_<m>`` per modality,
  against class prototypes recomputed at each epoch start (momentum 0.2).

Signals: semantic confidences per modality (the batch-mean true-class probability, from the
modality's own head, ``signals: heads``, or its slice of the fusion classifier, ``signals:
split``) and domain confidences (from its slice of the linear discriminator) for GMP and
OGM-GE; Shapley scores from masked forwards for AGM; prototype confidences for PMR; the
probe heads' batch accuracies for CGGM (whose direction term, ``loss.direction`` × L_gm, is
added on the next step). The confidences are computed for every method to log ρ and σ.

Model selection uses the sources' validation split only; the held-out domain is scored at the
epoch with the best source-validation accuracy.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomllib
import torch
from torch import nn

import gradsurgery as gs
from gradsurgery.signals import (
    cggm_direction_loss,
    class_prototypes,
    modality_accuracies,
    prototype_confidences,
    prototype_logits,
    shapley_scores,
    split_linear_logits,
    true_class_confidence,
)

from .features import DGSplits, MMDGSplit
from .model import MMDGNet, Outputs

__all__ = [
    "RECIPES",
    "Recipe",
    "RunConfig",
    "RunResult",
    "evaluate",
    "load_config",
    "objectives",
    "recipe_for",
    "robustness",
    "train_run",
]

_DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {"hidden": 128, "feat": 64, "reversal": 1.0, "dropout": 0.0},
    "loss": {"unimodal": 1.0, "domain": 1.0, "direction": 0.0},
    "train": {"epochs": 20, "batch_size": 64, "lr": 1e-3, "weight_decay": 0.0},
}


#: Engines a config may name (``representation`` is GMP at the encoders' outputs).
ENGINES = ("auto", "table", "gramian", "representation")

Layout = Literal["cls_dom", "single", "unimodal", "prototype"]
SignalKind = Literal["confidence", "shapley", "prototype", "accuracy", "none"]


@dataclass(frozen=True)
class Recipe:
    """How the loop feeds one method.

    Attributes:
        layout: The objectives: ``"cls_dom"`` (``cls``, ``dom``), ``"single"`` (``loss``),
            ``"unimodal"`` (``mm`` and ``uni_<m>``) or ``"prototype"`` (``cls``, ``dom``
            and ``proto_<m>``); see `objectives`.
        signals: What the method reads: ``"confidence"`` (semantic and domain confidences),
            ``"shapley"`` (AGM's scores), ``"prototype"`` (PMR's prototype confidences),
            ``"accuracy"`` (CGGM's probe-head accuracies) or ``"none"``.
    """

    layout: Layout
    signals: SignalKind


#: The methods whose signals the loop computes, by registered name (``Method.name``).
RECIPES: dict[str, Recipe] = {
    "gmp": Recipe("cls_dom", "confidence"),
    "ogmge": Recipe("single", "confidence"),
    "agm": Recipe("single", "shapley"),
    "cggm": Recipe("single", "accuracy"),
    "pmr": Recipe("prototype", "prototype"),
    "mmpareto": Recipe("unimodal", "none"),
}


def recipe_for(method: gs.Method) -> Recipe:
    """The objectives and signals for ``method``, from what it declares.

    A method listed in `RECIPES` gets its recipe; any other method that reads no signal gets
    one objective when it takes at most one (``max_objectives == 1``), else ``cls`` and
    ``dom``.

    Raises:
        ValueError: If the method needs signals this loop does not know how to compute.
    """
    if method.name in RECIPES:
        return RECIPES[method.name]
    if method.needs_signals:
        raise ValueError(
            f"the MMDG loop does not compute the signals {method.name!r} needs: "
            f"{list(method.needs_signals)}"
        )
    return Recipe("single" if method.max_objectives == 1 else "cls_dom", "none")


def objectives(
    layout: Layout,
    fused: torch.Tensor,
    heads: Mapping[str, torch.Tensor],
    dom: torch.Tensor | None,
    proto: Mapping[str, torch.Tensor] | None = None,
    *,
    heads_reach_encoders: bool = True,
) -> dict[str, torch.Tensor]:
    """The method's objectives from one batch's (already weighted) loss terms.

    Args:
        layout: See `Recipe`.
        fused: The fusion classifier's cross-entropy.
        heads: Modality → its head's weighted cross-entropy.
        dom: The weighted adversarial loss, or ``None``.
        proto: Modality → its prototypical cross-entropy (``"prototype"`` layout).
        heads_reach_encoders: ``False`` when the heads are probes on detached features; their
            losses then stay in the first objective (alone they would reach no block).

    Returns:
        Objective name → loss, in row order.
    """
    head_sum = sum(heads.values(), fused.new_zeros(()))
    cls = fused + head_sum
    if layout == "single":
        return {"loss": cls if dom is None else cls + dom}
    if layout == "unimodal":
        mm = fused if heads_reach_encoders else cls
        out = {"mm": mm if dom is None else mm + dom}
        if heads_reach_encoders:
            out.update({f"uni_{m}": v for m, v in heads.items()})
        return out
    out = {"cls": cls} if dom is None else {"cls": cls, "dom": dom}
    if layout == "prototype":
        if proto is None:
            raise ValueError("the prototype layout needs the prototypical losses")
        out.update({f"proto_{m}": v for m, v in proto.items()})
    return out


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
        engine: ``gradsurgery.backward``'s engine: ``"auto"`` (exact) or
            ``"representation"`` (decides on the gradients of the encoders' outputs).
    """

    name: str
    method: str | dict[str, Any] = "sum"
    model: dict[str, Any] = field(default_factory=dict)
    loss: dict[str, float] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    signals: str = "heads"
    modalities: list[str] | None = None
    engine: str = "auto"

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
        if self.engine not in ENGINES:
            raise ValueError(f"config {self.name!r}: engine must be one of {list(ENGINES)}")
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
    known = {"name", "method", "model", "loss", "train", "signals", "modalities", "engine"}
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


def _method_signals(
    kind: SignalKind,
    model: MMDGNet,
    out: Outputs,
    batch: tuple[Mapping[str, torch.Tensor], torch.Tensor],
    confidences: Mapping[str, Mapping[str, torch.Tensor]],
    prototypes: Mapping[str, torch.Tensor],
    objective: str,
) -> dict[str, dict[str, torch.Tensor]] | None:
    """The signals of `Recipe` ``kind`` for one batch.

    ``objective`` is the name the single-objective signals are given under; the confidences
    are remapped to it when the method takes one objective."""
    x, y = batch
    if kind == "confidence":
        if objective == "cls":
            return {m: dict(c) for m, c in confidences.items()}
        return {m: {objective: c["cls"]} for m, c in confidences.items()}
    if kind == "shapley":
        return shapley_scores(
            lambda inputs: model(inputs).fused, x, y, objective=objective, full=out.fused
        )
    if kind == "prototype":
        names = {m: f"proto_{m}" for m in out.features}
        return prototype_confidences(out.features, prototypes, y, objectives=names)
    if kind == "accuracy":
        return modality_accuracies(out.unimodal, y, objective=objective)
    return None


@torch.no_grad()
def _prototypes(
    model: MMDGNet,
    split: MMDGSplit,
    order: torch.Tensor,
    batch_size: int,
    previous: Mapping[str, torch.Tensor],
    momentum: float = 0.2,
) -> dict[str, torch.Tensor]:
    """PMR's class prototypes at an epoch start: eval mode, the first tenth of the epoch's
    batches, momentum ``μ`` over the previous prototypes (the official defaults)."""
    rows = order[: max(1, len(split) // batch_size // 10) * batch_size]
    model.eval()
    feats = {m: model.encoders[m](split.features[m][rows]) for m in model.modalities}
    model.train()
    return {
        m: class_prototypes(
            f, split.label[rows], len(split.classes), previous=previous.get(m), momentum=momentum
        )
        for m, f in feats.items()
    }


def _direction_loss(model: MMDGNet, report: gs.Report) -> torch.Tensor | None:
    """CGGM's ``L_gm`` from this step's ``B`` (report detail), or ``None`` without one.

    Each probe head's weight is compared with its modality's slice of the fusion classifier
    (the fused output layer restricted to that modality, the same shape as the head)."""
    coefficients = {m: report.blocks[m].details.get("B") for m in model.modalities}
    if any(not isinstance(b, float) for b in coefficients.values()):
        return None
    width = model.classifier.in_features // len(model.modalities)
    terms = [
        cggm_direction_loss(
            {m: float(b)},  # type: ignore[arg-type]
            {m: model.heads[m].weight},
            model.classifier.weight[:, i * width : (i + 1) * width],
        )
        for i, (m, b) in enumerate(coefficients.items())
    ]
    return torch.stack(terms).mean()


def _ratios(values: Mapping[str, float], *, inverse: bool = False) -> dict[str, float]:
    """Each modality's value against the mean of the others (GMP's Eq. 8; ``inverse`` for σ).

    Logged for every method, so joint training shows the imbalance GMP reacts to."""
    out = {}
    for m, mine in values.items():
        others = [v for n, v in values.items() if n != m]
        mean = sum(others) / len(others)
        out[m] = (mean / (mine + 1e-6)) if inverse else (mine / (mean + 1e-6))
    return out


def _epoch_means(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per key, the mean over the steps that logged it."""
    keys = dict.fromkeys(k for r in rows for k in r)
    return {k: statistics.fmean(r[k] for r in rows if k in r) for k in keys}


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
        for key in ("k", "p", "coeff", "B"):  # GMP and OGM-GE; AGM; CGGM
            if isinstance(block.details.get(key), (int, float, torch.Tensor)):
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
    recipe = recipe_for(method)
    objective = "loss" if recipe.layout == "single" else "cls"
    hp = cfg.train
    opt = torch.optim.Adam(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    gen = torch.Generator().manual_seed(seed)
    blocks = {m: list(model.encoders[m].parameters()) for m in modalities}
    ce = nn.functional.cross_entropy
    probe = cfg.loss["unimodal"] == 0
    head_weight = 1.0 if probe else cfg.loss["unimodal"]
    prototypes: dict[str, torch.Tensor] = {}
    extra: dict[str, torch.Tensor] | None = None
    best: tuple[float, int, dict[str, float], dict[str, float], dict[str, float]]
    best = (-1.0, 0, {}, {}, {})
    trajectory = []
    start = time.perf_counter()
    for epoch in range(hp["epochs"]):
        method.set_epoch(epoch)
        order = torch.randperm(len(train), generator=gen).to(device)
        if recipe.layout == "prototype":
            prototypes = _prototypes(model, train, order, hp["batch_size"], prototypes)
        rows: list[dict[str, float]] = []
        for i in range(0, len(train) - hp["batch_size"] + 1, hp["batch_size"]):
            idx = order[i : i + hp["batch_size"]]
            x = {m: train.features[m][idx] for m in modalities}
            y, d = train.label[idx], train.domain[idx]
            out = model(x, probe_heads=probe)
            dom = None
            if out.domain is not None and cfg.loss["domain"] > 0:
                dom = cfg.loss["domain"] * ce(out.domain, d)
            proto = None
            if recipe.layout == "prototype":
                proto = {m: ce(prototype_logits(out.features[m], prototypes[m]), y) for m in x}
            losses = objectives(
                recipe.layout,
                ce(out.fused, y),
                {m: head_weight * ce(out.unimodal[m], y) for m in modalities},
                dom,
                proto,
                heads_reach_encoders=not probe,
            )
            signals = _signals(model, out, y, d, cfg.signals)
            method_signals = _method_signals(
                recipe.signals, model, out, (x, y), signals, prototypes, objective
            )
            opt.zero_grad(set_to_none=True)
            report = gs.backward(
                losses,
                blocks,
                method,
                method_signals,
                diagnostics=True,
                engine=cfg.engine,
                features=out.features if cfg.engine == "representation" else None,
                extra=extra,
            )
            opt.step()
            extra = None
            if cfg.loss["direction"] > 0:
                direction = _direction_loss(model, report)
                if direction is not None:
                    extra = {"direction": cfg.loss["direction"] * direction}
            rows.append(_log_step(signals, report))
        trajectory.append(_epoch_means(rows))
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
