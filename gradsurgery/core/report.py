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


Deferred = bool | torch.Tensor
"""A flag that is either known on the host or a 0-d boolean tensor read when needed."""


def _resolve(flag: Deferred) -> bool:
    return bool(flag) if isinstance(flag, torch.Tensor) else flag


class BlockReport:
    """What a method did to one block.

    A step without host synchronisation (``sync=False``) leaves the weights, the flags and
    the details as device tensors; they are read (one synchronisation) only when accessed.

    Attributes:
        weights: ``(k,)`` coefficients applied to the original gradient rows; when `linear`
            the update is exactly ``Σ_i weights[i] · g_i``.
        details: Method-specific values (e.g. GMP's ``rho``, ``sigma``, ``gamma``).
        linear: False when an element-wise step (noise, sign dropout) changed the update
            beyond the weighted sum.
        gramian: The block's ``(k, k)`` Gramian when it was computed this step (by the
            method, or because diagnostics were asked for), else ``None``.
    """

    def __init__(
        self,
        weights: torch.Tensor,
        changed: Deferred,
        projected: tuple[str, ...] | torch.Tensor = (),
        details: dict[str, Any] | None = None,
        linear: bool = True,
        gramian: torch.Tensor | None = None,
        objectives: tuple[str, ...] = (),
    ) -> None:
        if isinstance(projected, torch.Tensor) and projected.shape != (len(objectives),):
            raise ValueError(
                f"a projected mask needs one entry per objective ({len(objectives)}), got shape "
                f"{tuple(projected.shape)}"
            )
        self.weights = weights
        self.details: dict[str, Any] = details if details is not None else {}
        self.linear = linear
        self.gramian = gramian
        self._changed = changed
        self._projected = projected
        self._objectives = objectives
        self._cosine: torch.Tensor | None = None

    @property
    def changed(self) -> bool:
        """Whether the update differs from the plain sum ``Σ_i g_i``."""
        if isinstance(self._changed, torch.Tensor):
            self._changed = _resolve(self._changed)
        return self._changed

    @property
    def projected(self) -> tuple[str, ...]:
        """Objectives whose rows were projected."""
        if isinstance(self._projected, torch.Tensor):
            mask = self._projected.tolist()
            self._projected = tuple(o for o, hit in zip(self._objectives, mask) if hit)
        return self._projected

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
            "details": {k: _plain(v) for k, v in self.details.items()},
        }
        if cosine is not None and conflict is not None:
            out["cosine"] = {f"{names[i]}|{names[j]}": float(cosine[i, j]) for i, j in pairs}
            out["conflict"] = {f"{names[i]}|{names[j]}": bool(conflict[i, j]) for i, j in pairs}
        return out

    def __repr__(self) -> str:
        return (
            f"BlockReport(weights={self.weights!r}, changed={self._changed!r}, "
            f"projected={self._projected!r}, linear={self.linear})"
        )


def _plain(value: Any) -> Any:
    """A detail as a host value: 0-d tensors become numbers, others lists (also inside
    lists and tuples)."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


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
            ``on_nonfinite="skip"``); the plain sum was then written instead. After a step
            without host synchronisation it is read from the device on first access.
        notes: Human-readable remarks (why a step was skipped, parameters no objective
            reached, frozen parameters, solver fallbacks, ...).
        engine: The engine that built the gradient table (``None`` for plain matrices).
    """

    method: str
    objectives: tuple[str, ...]
    blocks: dict[str, BlockReport]
    skipped_flag: Deferred = False
    notes: list[str] = field(default_factory=list)
    engine: str | None = None
    skip_reason: str | None = field(default=None, repr=False)

    @property
    def skipped(self) -> bool:
        """Whether the surgery was skipped this step (see the class attributes)."""
        if isinstance(self.skipped_flag, torch.Tensor):
            self.skipped_flag = _resolve(self.skipped_flag)
            if self.skipped_flag and self.skip_reason:
                self.notes.append(self.skip_reason)
        return self.skipped_flag

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
