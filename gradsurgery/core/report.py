"""Reports: what a method did to each block on one step.

Diagnostics that cost something (cosines and conflicts) are computed on first access from
the ``k x k`` Gramian the method already used, so a report nobody reads costs nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from .gramian import conflicts, cosines

__all__ = ["BlockReport", "Report"]


@dataclass
class BlockReport:
    """What a method did to one block.

    Attributes:
        weights: ``(k,)`` coefficients applied to the original gradient rows; when `linear`
            the update is exactly ``Σ_i weights[i] · g_i``.
        changed: Whether the update differs from the plain sum ``Σ_i g_i``.
        projected: Objectives whose rows were projected.
        details: Method-specific values (e.g. GMP's ``rho``, ``sigma``, ``gamma``).
        linear: False when an element-wise step (noise, sign dropout) changed the update
            beyond the weighted sum.
        gramian: The block's ``(k, k)`` Gramian when it was computed this step (by the
            method, or because diagnostics were asked for), else ``None``.
    """

    weights: torch.Tensor
    changed: bool
    projected: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    linear: bool = True
    gramian: torch.Tensor | None = field(default=None, repr=False)
    _cosine: torch.Tensor | None = field(default=None, repr=False)

    @property
    def cosine(self) -> torch.Tensor | None:
        """``(k, k)`` pairwise cosine similarities of the rows (computed on first access);
        ``None`` when no Gramian was computed (pass ``diagnostics=True`` to get one)."""
        if self._cosine is None and self.gramian is not None:
            self._cosine = cosines(self.gramian.double().cpu())
        return self._cosine

    @property
    def conflict(self) -> torch.Tensor | None:
        """``(k, k)`` boolean matrix of pairs with a negative dot product, or ``None``."""
        if self.gramian is None:
            return None
        return conflicts(self.gramian.cpu())

    def to_dict(self, objectives: tuple[str, ...]) -> dict[str, Any]:
        """A JSON-friendly view keyed by objective names."""
        names = list(objectives)
        pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
        cosine, conflict = self.cosine, self.conflict
        out: dict[str, Any] = {
            "weights": dict(zip(names, self.weights.tolist())),
            "changed": self.changed,
            "linear": self.linear,
            "projected": list(self.projected),
            "details": dict(self.details),
        }
        if cosine is not None and conflict is not None:
            out["cosine"] = {f"{names[i]}|{names[j]}": float(cosine[i, j]) for i, j in pairs}
            out["conflict"] = {f"{names[i]}|{names[j]}": bool(conflict[i, j]) for i, j in pairs}
        return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value)
    return None


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
            reached, frozen parameters, solver fallbacks, ...).
        engine: The engine that built the gradient table (``None`` for plain matrices).
    """

    method: str
    objectives: tuple[str, ...]
    blocks: dict[str, BlockReport]
    skipped: bool = False
    notes: list[str] = field(default_factory=list)
    engine: str | None = None

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
            "engine": self.engine,
            "skipped": self.skipped,
            "notes": list(self.notes),
            "blocks": {n: b.to_dict(self.objectives) for n, b in self.blocks.items()},
        }

    def scalars(self, prefix: str = "gs/") -> dict[str, float]:
        """A flat ``{name: float}`` view for TensorBoard, Weights & Biases or ``log_dict``.

        Keys are ``{prefix}{block}/weight/{objective}``, ``{prefix}{block}/cosine/{a}|{b}``
        and ``.../conflict/{a}|{b}`` (when a Gramian was computed), ``{prefix}{block}/changed``,
        one ``{prefix}{block}/{detail}`` per numeric detail (non-finite values dropped), and
        ``{prefix}skipped``.
        """
        out: dict[str, float] = {f"{prefix}skipped": float(self.skipped)}
        names = list(self.objectives)
        for block, rep in self.blocks.items():
            base = f"{prefix}{block}/"
            for name, w in zip(names, rep.weights.tolist()):
                out[f"{base}weight/{name}"] = float(w)
            out[f"{base}changed"] = float(rep.changed)
            cosine, conflict = rep.cosine, rep.conflict
            if cosine is not None and conflict is not None:
                for i in range(len(names)):
                    for j in range(i + 1, len(names)):
                        pair = f"{names[i]}|{names[j]}"
                        out[f"{base}cosine/{pair}"] = float(cosine[i, j])
                        out[f"{base}conflict/{pair}"] = float(conflict[i, j])
            for key, value in rep.details.items():
                number = _number(value)
                if number is not None and math.isfinite(number):
                    out[f"{base}{key}"] = number
        return out
