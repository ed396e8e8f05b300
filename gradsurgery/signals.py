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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

__all__ = [
    "GradientReversal",
    "grad_reverse",
    "modality_confidences",
    "split_linear_logits",
    "true_class_confidence",
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
