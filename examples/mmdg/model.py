"""The MMDG model: per-modality encoders and heads, a fusion classifier, a GRL discriminator.

Every method in the comparison trains this same model with the same losses; only the way the
encoders' gradients are combined changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from gradsurgery.signals import GradientReversal

__all__ = ["MMDGNet", "Outputs"]


@dataclass
class Outputs:
    """One forward pass.

    Attributes:
        features: Modality → encoder features ``[B, feat]`` (in concatenation order).
        fused: Fusion-classifier logits ``[B, C]``.
        unimodal: Modality → its own head's logits ``[B, C]``.
        domain: Discriminator logits ``[B, D]`` (behind the gradient-reversal layer).
    """

    features: dict[str, torch.Tensor]
    fused: torch.Tensor
    unimodal: dict[str, torch.Tensor]
    domain: torch.Tensor | None


class MMDGNet(nn.Module):
    """Per-modality MLP encoders, per-modality linear heads, a linear fusion classifier on the
    concatenated features, and a linear domain discriminator behind a gradient-reversal layer.

    The fusion classifier and the discriminator are linear so that each modality's share of
    their logits is exactly the paper's ``W^m φ^m`` and ``D^m φ^m`` (GMP Eqs. 5–7).

    Args:
        in_dims: Modality → flattened input size, in concatenation order.
        n_classes: Number of classes.
        n_domains: Number of source domains (no discriminator when 1).
        hidden: Hidden width of the encoders.
        feat: Feature width of each encoder.
        reversal: Gradient-reversal coefficient ``λ``.
        dropout: Dropout on the encoders' hidden layer.
    """

    def __init__(
        self,
        in_dims: Mapping[str, int],
        n_classes: int,
        n_domains: int,
        *,
        hidden: int = 128,
        feat: int = 64,
        reversal: float = 1.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.modalities = tuple(in_dims)
        self.encoders = nn.ModuleDict(
            {
                m: nn.Sequential(
                    nn.Flatten(),
                    nn.Linear(d, hidden),
                    nn.ReLU(),
                    nn.Dropout(dropout),
                    nn.Linear(hidden, feat),
                    nn.ReLU(),
                )
                for m, d in in_dims.items()
            }
        )
        self.heads = nn.ModuleDict({m: nn.Linear(feat, n_classes) for m in in_dims})
        self.classifier = nn.Linear(feat * len(in_dims), n_classes)
        self.grl = GradientReversal(reversal)
        self.discriminator = nn.Linear(feat * len(in_dims), n_domains) if n_domains > 1 else None

    def forward(self, x: Mapping[str, torch.Tensor], *, probe_heads: bool = False) -> Outputs:
        """Run the model.

        Args:
            x: Modality → inputs.
            probe_heads: Feed the per-modality heads detached features, so that their loss
                trains the heads (as linear probes of each modality) but not the encoders.
        """
        feats = {m: self.encoders[m](x[m]) for m in self.modalities}
        z = torch.cat([feats[m] for m in self.modalities], dim=1)
        domain = self.discriminator(self.grl(z)) if self.discriminator is not None else None
        return Outputs(
            features=feats,
            fused=self.classifier(z),
            unimodal={
                m: self.heads[m](feats[m].detach() if probe_heads else feats[m])
                for m in self.modalities
            },
            domain=domain,
        )
