"""Signal helpers for multimodal methods: confidences, per-modality logits, gradient reversal.

Typical use with GMP, for a fused linear classifier and a linear domain discriminator on
concatenated modality features (the paper's Eqs. 5–7):

```python
feats = {"video": z_v, "audio": z_a}
signals = gs.signals.modality_confidences(
    feats, classifier=fc, targets=y, discriminator=disc, domains=d
)
gs.backward({"cls": l_cls, "dom": l_dom}, blocks, gs.GMP(), signals)
```

The multimodal balancers read further signals, each computed by a helper below:

* AGM — `shapley_scores`: per-modality cross-entropy scores of Shapley-style unimodal
  logits from masked forwards of the fused model (`shapley_logits`, `unimodal_score`);
* PMR — `class_prototypes`, `prototype_logits` and `prototype_confidences`;
* CGGM — `modality_accuracies` of auxiliary classifiers (the method keeps the previous
  values and forms the deltas), and `cggm_direction_loss` for its direction term.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from torch import nn

__all__ = [
    "GradientReversal",
    "batch_accuracy",
    "cggm_direction_loss",
    "class_prototypes",
    "grad_reverse",
    "masked_logits",
    "modality_accuracies",
    "modality_confidences",
    "prototype_confidence",
    "prototype_confidences",
    "prototype_logits",
    "shapley_logits",
    "shapley_scores",
    "split_linear_logits",
    "true_class_confidence",
    "unimodal_score",
    "unimodal_scores",
]

BiasMode = Literal["none", "split", "full"]


def true_class_confidence(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Batch mean of the softmax probability of the true class (GMP Eqs. 6–7, OGM-GE).

    Args:
        logits: ``(B, C)`` logits.
        targets: ``(B,)`` integer labels in ``[0, C)``.

    Returns:
        A detached 0-d tensor in ``[0, 1]``.

    Raises:
        ValueError: On mismatched shapes or labels out of range.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be (B, C), got shape {tuple(logits.shape)}")
    if targets.shape != logits.shape[:1]:
        raise ValueError(
            f"targets must have shape ({logits.shape[0]},), got {tuple(targets.shape)}"
        )
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= logits.shape[1]):
        raise ValueError(f"targets must lie in [0, {logits.shape[1]}), got {targets.tolist()}")
    with torch.no_grad():
        probs = logits.detach().float().softmax(dim=1)
        return probs.gather(1, targets.long()[:, None]).mean()


def split_linear_logits(
    features: Mapping[str, torch.Tensor], linear: nn.Linear, *, bias: BiasMode = "none"
) -> dict[str, torch.Tensor]:
    """Per-modality logits of a linear head on concatenated features.

    The head computes ``W · concat(z^1, …, z^M) + b``; modality ``m``'s logits are
    ``W^m z^m`` with ``W^m`` the columns of ``W`` that multiply ``z^m`` (GMP Eq. 5). The
    features must be given in the order they were concatenated.

    Args:
        features: Modality name → ``(B, d_m)`` features, in concatenation order.
        linear: The fused head.
        bias: ``"none"`` (GMP Eq. 6), ``"split"`` (``b / M``, OGM-GE's concat fusion) or
            ``"full"`` (``b`` each).

    Returns:
        Modality name → detached ``(B, C)`` logits.

    Raises:
        ValueError: If the feature widths do not add up to the head's input width.
    """
    widths = {m: z.shape[-1] for m, z in features.items()}
    if sum(widths.values()) != linear.in_features:
        raise ValueError(
            f"feature widths {widths} add up to {sum(widths.values())}, but the head takes "
            f"{linear.in_features} inputs"
        )
    if bias not in ("none", "split", "full"):
        raise ValueError(f"bias must be 'none', 'split' or 'full', got {bias!r}")
    out = {}
    start = 0
    with torch.no_grad():
        weight = linear.weight.detach()
        for m, z in features.items():
            block = weight[:, start : start + widths[m]]
            logits = z.detach() @ block.T
            if linear.bias is not None and bias != "none":
                b = linear.bias.detach()
                logits = logits + (b / len(features) if bias == "split" else b)
            out[m] = logits
            start += widths[m]
    return out


def modality_confidences(
    features: Mapping[str, torch.Tensor],
    *,
    classifier: nn.Linear,
    targets: torch.Tensor,
    discriminator: nn.Linear | None = None,
    domains: torch.Tensor | None = None,
    cls: str = "cls",
    dom: str = "dom",
    bias: BiasMode = "none",
) -> dict[str, dict[str, torch.Tensor]]:
    """The signals GMP (and, with ``cls`` only, OGM-GE) needs, from split linear heads.

    Args:
        features: Modality name → features, in concatenation order.
        classifier: The fused linear classifier.
        targets: Class labels.
        discriminator: The linear domain discriminator (on the same concatenation), if any.
        domains: Domain labels (required with ``discriminator``).
        cls: Objective name for the semantic confidence.
        dom: Objective name for the domain confidence.
        bias: How the heads' biases enter the per-modality logits.

    Returns:
        ``{modality: {cls: q̄^m, dom: c̄^m}}``.
    """
    out: dict[str, dict[str, Any]] = {m: {} for m in features}
    for m, logits in split_linear_logits(features, classifier, bias=bias).items():
        out[m][cls] = true_class_confidence(logits, targets)
    if discriminator is not None:
        if domains is None:
            raise ValueError("domains are required to compute domain confidences")
        for m, logits in split_linear_logits(features, discriminator, bias=bias).items():
            out[m][dom] = true_class_confidence(logits, domains)
    return out


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, coefficient: float) -> torch.Tensor:
        ctx.coefficient = coefficient
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.coefficient * grad, None


def grad_reverse(x: torch.Tensor, coefficient: float = 1.0) -> torch.Tensor:
    """Identity forward; multiplies the gradient by ``−coefficient`` backward (a GRL)."""
    return _Reverse.apply(x, coefficient)  # type: ignore[no-any-return, no-untyped-call]


class GradientReversal(nn.Module):
    """Gradient-reversal layer (Ganin & Lempitsky, 2015) with coefficient ``λ``.

    Put it between the encoders' features and the domain discriminator: the discriminator
    descends ``L_d`` while the encoders receive ``−λ∇L_d``, GMP's ``g_d`` (Eq. 2).

    Args:
        coefficient: ``λ`` (the authors' benchmark code uses 0.3).
    """

    def __init__(self, coefficient: float = 1.0) -> None:
        super().__init__()
        self.coefficient = float(coefficient)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.coefficient)

    def extra_repr(self) -> str:
        return f"coefficient={self.coefficient}"


# -- shared checks -------------------------------------------------------------------------


def _check_targets(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.dim() != 2:
        raise ValueError(f"logits must be (B, C), got shape {tuple(logits.shape)}")
    if targets.shape != logits.shape[:1]:
        raise ValueError(
            f"targets must have shape ({logits.shape[0]},), got {tuple(targets.shape)}"
        )
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= logits.shape[1]):
        raise ValueError(f"targets must lie in [0, {logits.shape[1]}), got {targets.tolist()}")


# -- AGM: unimodal scores from masked forwards ---------------------------------------------


def unimodal_score(
    logits: torch.Tensor, targets: torch.Tensor, *, floor: float = 1e-8
) -> torch.Tensor:
    """AGM's score of one modality: the batch-mean cross-entropy of its logits.

    ``s = mean_i −log max(softmax(logits)_{i, y_i}, floor)``: lower means more confident on
    the true class. The floor keeps a saturated wrong prediction finite (the official code's
    ``1e-8``).

    Args:
        logits: ``(B, C)`` logits of the modality (e.g. from `shapley_logits`).
        targets: ``(B,)`` integer labels in ``[0, C)``.
        floor: Smallest probability taken into the logarithm.

    Returns:
        A detached 0-d float tensor, ``≥ 0``.
    """
    _check_targets(logits, targets)
    if not 0 < floor <= 1:
        raise ValueError(f"floor must be in (0, 1], got {floor!r}")
    with torch.no_grad():
        logp = logits.detach().double().log_softmax(dim=1)
        true = logp.gather(1, targets.long()[:, None])[:, 0]
        return (-true.clamp_min(math.log(floor))).mean().float()


def unimodal_scores(
    logits: Mapping[str, torch.Tensor],
    targets: torch.Tensor,
    *,
    objective: str = "cls",
    floor: float = 1e-8,
) -> dict[str, dict[str, torch.Tensor]]:
    """`unimodal_score` of every modality, as AGM's signals ``{m: {objective: s_m}}``.

    Args:
        logits: Modality name → ``(B, C)`` unimodal logits (from any source: masked
            forwards, `split_linear_logits`, unimodal heads).
        targets: Class labels.
        objective: Name of the fused objective the scores are given for.
        floor: See `unimodal_score`.
    """
    return {m: {objective: unimodal_score(z, targets, floor=floor)} for m, z in logits.items()}


def masked_logits(
    forward: Callable[[Mapping[str, torch.Tensor]], torch.Tensor],
    inputs: Mapping[str, torch.Tensor],
    keep: frozenset[str] | set[str],
) -> torch.Tensor:
    """The fused model's logits with the modalities outside ``keep`` zeroed out.

    Assumes a fused model called as ``forward({modality: input}) → (B, C) logits`` for which
    an all-zero input stands for an absent modality (the official AGM code zero-pads).

    Args:
        forward: The fused model (any callable of the inputs mapping).
        inputs: Modality name → input tensor.
        keep: The modalities left as they are.
    """
    unknown = set(keep) - set(inputs)
    if unknown:
        raise ValueError(f"keep names unknown modalities {sorted(unknown)}; have {list(inputs)}")
    masked = {m: x if m in keep else torch.zeros_like(x) for m, x in inputs.items()}
    return forward(masked)


def shapley_logits(
    forward: Callable[[Mapping[str, torch.Tensor]], torch.Tensor],
    inputs: Mapping[str, torch.Tensor],
    *,
    full: torch.Tensor | None = None,
    eval_mode: bool = True,
) -> dict[str, torch.Tensor]:
    r"""AGM's Shapley-style unimodal logits from masked forwards of the fused model.

    With ``f(S)`` the fused logits when only the modalities in ``S`` are given
    (`masked_logits`) and ``f(∅) := 0``, modality ``m``'s logits are its Shapley value

    $$o_m = \sum_{S \subseteq \mathcal M \setminus \{m\}}
      \frac{|S|!\,(M - |S| - 1)!}{M!}\,\big(f(S \cup \{m\}) - f(S)\big),$$

    so that ``Σ_m o_m = f(𝓜)``. For two modalities ``o_a = ½(f({a,v}) − f({v}) + f({a}))``.
    Runs ``2^M − 1`` forwards (``2^M − 2`` when ``full`` is given), without autograd.

    Assumes the model shape of `masked_logits`.

    Args:
        forward: The fused model. If it is an ``nn.Module`` and ``eval_mode`` is set, every
            submodule runs in eval mode for the masked passes and gets its own mode back
            afterwards (the official code's masked passes run in eval mode).
        inputs: Modality name → input tensor.
        full: The logits of the training forward on all modalities, ``f(𝓜)`` (the official
            code takes it from the train-mode pass); computed here when ``None``.
        eval_mode: Switch an ``nn.Module`` to eval mode for the passes.

    Returns:
        Modality name → detached ``(B, C)`` logits.
    """
    names = list(inputs)
    if not names:
        raise ValueError("inputs is empty: give at least one modality")
    modes = []
    if eval_mode and isinstance(forward, nn.Module):
        modes = [(module, module.training) for module in forward.modules()]
        forward.eval()
    values: dict[frozenset[str], torch.Tensor] = {}
    try:
        with torch.no_grad():
            for size in range(1, len(names) + 1):
                for subset in itertools.combinations(names, size):
                    key = frozenset(subset)
                    if size == len(names) and full is not None:
                        values[key] = full.detach()
                    else:
                        values[key] = masked_logits(forward, inputs, key).detach()
    finally:
        for module, training in modes:
            module.training = training
    count = len(names)
    out = {}
    for m in names:
        others = [n for n in names if n != m]
        total = torch.zeros_like(values[frozenset(names)])
        for size in range(count):
            weight = math.factorial(size) * math.factorial(count - size - 1) / math.factorial(count)
            for subset in itertools.combinations(others, size):
                key = frozenset(subset)
                gain = values[key | {m}] - (values[key] if key else 0.0)
                total = total + weight * gain
        out[m] = total
    return out


def shapley_scores(
    forward: Callable[[Mapping[str, torch.Tensor]], torch.Tensor],
    inputs: Mapping[str, torch.Tensor],
    targets: torch.Tensor,
    *,
    objective: str = "cls",
    full: torch.Tensor | None = None,
    eval_mode: bool = True,
    floor: float = 1e-8,
) -> dict[str, dict[str, torch.Tensor]]:
    """AGM's signals: `unimodal_scores` of the `shapley_logits`.

    Args:
        forward: The fused model (see `masked_logits` for the shape it must have).
        inputs: Modality name → input tensor (modality names = AGM's block names).
        targets: Class labels.
        objective: Name of the fused objective.
        full: See `shapley_logits`.
        eval_mode: See `shapley_logits`.
        floor: See `unimodal_score`.

    Returns:
        ``{m: {objective: s_m}}``.
    """
    logits = shapley_logits(forward, inputs, full=full, eval_mode=eval_mode)
    return unimodal_scores(logits, targets, objective=objective, floor=floor)


# -- PMR: class prototypes ------------------------------------------------------------------


def class_prototypes(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    previous: torch.Tensor | None = None,
    momentum: float = 0.2,
) -> torch.Tensor:
    """PMR's class prototypes of one modality: the mean feature of each class.

    Assumes a modality encoder whose output ``φ^m(x)`` is a ``(B, d)`` feature. Give the
    features of the samples the prototypes are computed on (PMR: the first tenth of the
    training batches at each epoch start, model in eval mode, without grad); with
    ``previous`` the result is ``(1 − μ)·new + μ·previous`` (PMR's momentum across epochs).

    A class with no sample keeps its ``previous`` prototype, or the zero vector on the first
    computation (where the official code divides by a zero count).

    Args:
        features: ``(N, d)`` features.
        labels: ``(N,)`` class labels in ``[0, num_classes)``.
        num_classes: The number of classes ``C``.
        previous: The last prototypes, ``(C, d)``, or ``None``.
        momentum: ``μ`` (official default 0.2; BalanceBenchmark 0.5).

    Returns:
        Detached ``(C, d)`` prototypes in the features' dtype.
    """
    if features.dim() != 2:
        raise ValueError(f"features must be (N, d), got shape {tuple(features.shape)}")
    if labels.shape != features.shape[:1]:
        raise ValueError(
            f"labels must have shape ({features.shape[0]},), got {tuple(labels.shape)}"
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got {labels.tolist()}")
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
    shape = (num_classes, features.shape[1])
    if previous is not None and tuple(previous.shape) != shape:
        raise ValueError(f"previous must have shape {shape}, got {tuple(previous.shape)}")
    with torch.no_grad():
        feats = features.detach()
        work = feats.double()
        sums = torch.zeros(shape, dtype=torch.float64, device=feats.device)
        sums.index_add_(0, labels.long(), work)
        counts = torch.bincount(labels.long(), minlength=num_classes).to(sums)
        present = counts > 0
        means = sums / counts.clamp_min(1)[:, None]
        if previous is None:
            out = torch.where(present[:, None], means, torch.zeros_like(means))
        else:
            old = previous.detach().to(device=feats.device, dtype=torch.float64)
            out = torch.where(present[:, None], (1 - momentum) * means + momentum * old, old)
        return out.to(feats.dtype)


def prototype_logits(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Negative Euclidean distances to the class prototypes, ``−‖φ(x_i) − c_k‖₂``.

    Differentiable in ``features`` (the prototypes are constants): the logits of PMR's
    prototypical cross-entropy, ``F.cross_entropy(prototype_logits(z, c), y)``, whose gradient
    reaches only the modality's encoder. Distances are Euclidean, not squared.

    Args:
        features: ``(B, d)`` features of one modality.
        prototypes: ``(C, d)`` prototypes of that modality.

    Returns:
        ``(B, C)`` logits.
    """
    if features.dim() != 2 or prototypes.dim() != 2 or features.shape[1] != prototypes.shape[1]:
        raise ValueError(
            f"features (B, d) and prototypes (C, d) must share d, got shapes "
            f"{tuple(features.shape)} and {tuple(prototypes.shape)}"
        )
    c = prototypes.detach().to(features)
    return -torch.cdist(features, c, compute_mode="donot_use_mm_for_euclid_dist")


def prototype_confidence(
    features: torch.Tensor, prototypes: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """PMR's confidence of one modality: the batch mean of ``softmax_k(−‖φ(x_i) − c_k‖)_{y_i}``.

    Returns:
        A detached 0-d tensor in ``[0, 1]``.
    """
    with torch.no_grad():
        logits = prototype_logits(features.detach(), prototypes)
    return true_class_confidence(logits, targets)


def prototype_confidences(
    features: Mapping[str, torch.Tensor],
    prototypes: Mapping[str, torch.Tensor],
    targets: torch.Tensor,
    *,
    objectives: Mapping[str, str] | None = None,
) -> dict[str, dict[str, torch.Tensor]]:
    """PMR's signals: each modality's `prototype_confidence`, under its prototypical objective.

    Args:
        features: Modality name → ``(B, d_m)`` features.
        prototypes: Modality name → ``(C, d_m)`` prototypes (`class_prototypes`).
        targets: Class labels.
        objectives: Modality name → the name of its prototypical cross-entropy objective
            (default ``"proto_<modality>"``).

    Returns:
        ``{m: {objective_m: p̄^m}}``.
    """
    missing = set(features) - set(prototypes)
    if missing:
        raise ValueError(f"no prototypes for modalities {sorted(missing)}")
    names = dict(objectives) if objectives is not None else {m: f"proto_{m}" for m in features}
    out: dict[str, dict[str, torch.Tensor]] = {}
    for m, z in features.items():
        if m not in names:
            raise ValueError(f"objectives names no prototypical objective for modality {m!r}")
        out[m] = {names[m]: prototype_confidence(z, prototypes[m], targets)}
    return out


# -- CGGM: auxiliary classifiers -------------------------------------------------------------


def batch_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The fraction of a batch whose arg-max class is the label (CGGM's metric).

    Returns:
        A detached 0-d float tensor in ``[0, 1]``.
    """
    _check_targets(logits, targets)
    with torch.no_grad():
        return (logits.detach().argmax(dim=1) == targets).float().mean()


def modality_accuracies(
    logits: Mapping[str, torch.Tensor], targets: torch.Tensor, *, objective: str = "cls"
) -> dict[str, dict[str, torch.Tensor]]:
    """CGGM's signals: each auxiliary classifier's `batch_accuracy`.

    Assumes one auxiliary classifier per modality on the *detached* modality features, trained
    with its own optimiser (CGGM's setting); CGGM keeps the previous values and forms the
    deltas ``Δ_m = acc_m(t) − acc_m(t−1)`` itself. For a regression or segmentation task pass
    your own batch metric (higher is better) instead.

    Args:
        logits: Modality name → ``(B, C)`` logits of its auxiliary classifier.
        targets: Class labels.
        objective: Name of the fused objective.

    Returns:
        ``{m: {objective: acc_m}}``.
    """
    return {m: {objective: batch_accuracy(z, targets)} for m, z in logits.items()}


def cggm_direction_loss(
    coefficients: Mapping[str, float],
    classifier_weights: Mapping[str, torch.Tensor],
    fused_weight: torch.Tensor,
) -> torch.Tensor:
    """CGGM's direction term ``L_gm = (Σ_m |B_m| − Σ_m B_m cos_m) / M``.

    Following the official code, ``cos_m`` is the cosine between the flattened weight tensors
    of auxiliary classifier ``m``'s output layer and of the fused model's output layer (the
    parameters themselves; the paper speaks of gradient directions, which the spec leaves
    open). Assumes output layers of equal size. Add ``λ·L_gm`` to the *next* step's loss, e.g.
    through ``extra=`` of `gradsurgery.backward` (it reaches no encoder); the official ``λ`` is
    0.05 (Food-101) or 0.2 (CMU-MOSI). The weights are cloned, so the loss can be
    back-propagated after the optimiser step; its gradient is taken at this step's values.

    Args:
        coefficients: ``B_m`` per modality (CGGM's report detail ``"B"``).
        classifier_weights: Modality name → the auxiliary classifier's output weight.
        fused_weight: The fused model's output-layer weight.

    Returns:
        A 0-d tensor, differentiable in the weights.
    """
    if set(coefficients) != set(classifier_weights):
        raise ValueError(
            f"coefficients {sorted(coefficients)} and classifier_weights "
            f"{sorted(classifier_weights)} must name the same modalities"
        )
    if not coefficients:
        raise ValueError("coefficients is empty: give at least one modality")
    # Clones (as the official code): the loss is back-propagated on the next step, after the
    # optimiser has updated these parameters in place; its gradient is taken at this step's
    # values.
    fused = fused_weight.clone().reshape(-1)
    total = fused.new_zeros(())
    for m, b in coefficients.items():
        w = classifier_weights[m].clone().reshape(-1)
        if w.numel() != fused.numel():
            raise ValueError(
                f"classifier weight of {m!r} has {w.numel()} entries, the fused output layer "
                f"{fused.numel()}; CGGM compares output layers of the same shape"
            )
        cos = nn.functional.cosine_similarity(w.to(fused), fused, dim=0)
        total = total + abs(float(b)) - float(b) * cos
    return total / len(coefficients)
