"""Reports: what a method did to each block on one step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["BlockReport", "Report"]


@dataclass
class BlockReport:
    """What a method did to one block.

    Attributes:
        weights: ``(k,)`` coefficients applied to the original gradient rows; the update is
            ``Σ_i weights[i] · g_i`` (before any method-specific noise).
        cosine: ``(k, k)`` pairwise cosine similarities of the original rows.
        conflict: ``(k, k)`` boolean matrix of pairs with a negative dot product.
        changed: Whether the update differs from the plain sum ``Σ_i g_i``.
        projected: Objectives whose rows were projected.
        details: Method-specific scalars (e.g. GMP's ``rho``, ``sigma``, ``gamma``).
    """

    weights: torch.Tensor
    cosine: torch.Tensor
    conflict: torch.Tensor
    changed: bool
    projected: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, objectives: tuple[str, ...]) -> dict[str, Any]:
        """A JSON-friendly view keyed by objective names."""
        names = list(objectives)
        pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
        return {
            "weights": dict(zip(names, self.weights.tolist())),
            "cosine": {f"{names[i]}|{names[j]}": float(self.cosine[i, j]) for i, j in pairs},
            "conflict": {f"{names[i]}|{names[j]}": bool(self.conflict[i, j]) for i, j in pairs},
            "changed": self.changed,
            "projected": list(self.projected),
            "details": dict(self.details),
        }


@dataclass
class Report:
    """What a method did on one step, per block.

    Attributes:
        method: The method's registered name.
        objectives: Objective names, in row order.
        blocks: Per-block reports.
        skipped: True when the surgery was skipped (non-finite gradients with
            ``on_nonfinite="skip"``); the plain sum was then written instead.
        notes: Human-readable remarks (why a step was skipped, parameters no objective
            reached, solver fallbacks, ...).
    """

    method: str
    objectives: tuple[str, ...]
    blocks: dict[str, BlockReport]
    skipped: bool = False
    notes: list[str] = field(default_factory=list)

    def __getitem__(self, block: str) -> BlockReport:
        return self.blocks[block]

    @property
    def changed(self) -> bool:
        """Whether any block's update differs from the plain sum."""
        return any(b.changed for b in self.blocks.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view, e.g. for a logger."""
        return {
            "method": self.method,
            "skipped": self.skipped,
            "notes": list(self.notes),
            "blocks": {n: b.to_dict(self.objectives) for n, b in self.blocks.items()},
        }
