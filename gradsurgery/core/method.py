"""The method interface: (gradient table, signals) → one update per block + a report."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from .gramian import combine, conflicts, cosines
from .report import BlockReport, Report
from .signals import SignalMap
from .table import BlockGradients, GradientTable

__all__ = ["Decision", "Method", "NonFiniteGradientError", "OnNonFinite"]

OnNonFinite = Literal["raise", "skip"]


class NonFiniteGradientError(FloatingPointError):
    """A gradient row holds NaN or Inf."""


@dataclass
class Decision:
    """A method's decision for one block: row weights and what it did.

    Attributes:
        weights: ``(k,)`` float64 coefficients over the original rows.
        projected: Objectives whose rows were projected.
        details: Method-specific values for the report.
    """

    weights: torch.Tensor
    projected: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)


def _nonfinite_rows(block: BlockGradients) -> list[int]:
    diag = block.gramian.diagonal()
    if bool(torch.isfinite(diag).all()):
        return []
    # compute_gramian rescales huge but finite rows, so a non-finite diagonal means a NaN or
    # Inf entry; find the rows that hold one, to name their objectives.
    return [i for i in range(block.matrix.shape[0]) if not bool(block.matrix[i].isfinite().all())]


class Method(abc.ABC):
    """Base class of every gradient-surgery method.

    A method decides, from the gradient table (usually only its ``k x k`` Gramians) and the
    signals, one weight per gradient row of each block; the update of a block is then one
    weighted pass over its rows. Subclasses implement `decide`; the math lives in pure
    functions, the class holds hyper-parameters and explicit state.

    Scale convention: on ``k`` identical rows ``g`` every method returns ``k·g``, the plain
    sum (``Mean`` is the one exception: it is the mean by definition).
    """

    name: ClassVar[str] = ""
    """Registered name, used by `gradsurgery.build`."""

    def __init__(self) -> None:
        self.last_report: Report | None = None

    # -- to implement ------------------------------------------------------------------

    @abc.abstractmethod
    def decide(self, table: GradientTable, signals: SignalMap | None) -> dict[str, Decision]:
        """Return one `Decision` per block of ``table``."""

    def hyperparameters(self) -> dict[str, Any]:
        """The constructor's keyword arguments, as given (shown by ``repr``)."""
        return {}

    def finalize(self, block: BlockGradients, update: torch.Tensor, decision: Decision) -> bool:
        """Modify ``update`` in place after the weighted sum; return True if it did.

        The default does nothing. OGM-GE adds its Generalization Enhancement noise here.
        """
        return False

    def _get_state(self) -> dict[str, Any]:
        return {}

    def _set_state(self, state: Mapping[str, Any]) -> None:
        if state:
            raise KeyError(f"{type(self).__name__} keeps no state, got keys {sorted(state)}")

    def reset(self) -> None:
        """Return to the state right after construction."""
        self.last_report = None

    # -- provided ----------------------------------------------------------------------

    def apply(
        self,
        table: GradientTable,
        signals: SignalMap | None = None,
        *,
        on_nonfinite: OnNonFinite = "raise",
    ) -> tuple[dict[str, torch.Tensor], Report]:
        """Compute one update vector per block.

        Args:
            table: The gradient table.
            signals: Per-(block, objective) scalars, for methods that need them.
            on_nonfinite: ``"raise"`` (default) raises `NonFiniteGradientError` when a
                gradient row holds NaN or Inf; ``"skip"`` skips the surgery for this step,
                returns the plain sum of the rows (non-finite, so ``GradScaler`` skips the
                optimizer step) and marks the report ``skipped``; the method's state does
                not advance.

        Returns:
            ``(updates, report)``: ``updates[block]`` is a ``(P,)`` tensor in the block's
            dtype and device.
        """
        if on_nonfinite not in ("raise", "skip"):
            raise ValueError(f"on_nonfinite must be 'raise' or 'skip', got {on_nonfinite!r}")
        bad = {name: _nonfinite_rows(b) for name, b in table.blocks.items()}
        bad = {name: rows for name, rows in bad.items() if rows}
        if bad:
            where = "; ".join(
                f"block {name!r}, objective(s) {[table.objectives[i] for i in rows]}"
                for name, rows in bad.items()
            )
            if on_nonfinite == "raise":
                raise NonFiniteGradientError(
                    f"non-finite gradient (NaN or Inf) in {where}; pass on_nonfinite='skip' "
                    "to skip the surgery on such steps"
                )
            return self._plain_sum(table, note=f"skipped: non-finite gradient in {where}")
        decisions = self.decide(table, signals)
        updates: dict[str, torch.Tensor] = {}
        blocks: dict[str, BlockReport] = {}
        for name, block in table.blocks.items():
            decision = decisions[name]
            update = combine(decision.weights, block.matrix)
            noised = self.finalize(block, update, decision)
            updates[name] = update
            gram = block.gramian
            blocks[name] = BlockReport(
                weights=decision.weights,
                cosine=cosines(gram),
                conflict=conflicts(gram),
                changed=noised or not bool((decision.weights == 1).all()),
                projected=decision.projected,
                details=decision.details,
            )
        report = Report(self.name, table.objectives, blocks)
        self.last_report = report
        return updates, report

    def _plain_sum(self, table: GradientTable, note: str) -> tuple[dict[str, torch.Tensor], Report]:
        updates = {name: b.matrix.sum(0) for name, b in table.blocks.items()}
        k = len(table.objectives)
        blocks = {
            name: BlockReport(
                weights=torch.ones(k, dtype=torch.float64),
                cosine=torch.full((k, k), float("nan"), dtype=torch.float64),
                conflict=torch.zeros(k, k, dtype=torch.bool),
                changed=False,
            )
            for name in table.blocks
        }
        report = Report(self.name, table.objectives, blocks, skipped=True, notes=[note])
        self.last_report = report
        return updates, report

    def __call__(
        self,
        matrix: torch.Tensor,
        /,
        *,
        signals: SignalMap | None = None,
        objectives: Sequence[str] | None = None,
        block: str = "block",
        on_nonfinite: OnNonFinite = "raise",
    ) -> torch.Tensor:
        """Apply the method to one block given as a plain ``(k, P)`` tensor.

        Args:
            matrix: ``(k, P)`` gradient rows (a ``(P,)`` vector counts as ``k = 1``).
            signals: Signals, keyed by ``block`` then objective.
            objectives: Row names (default ``"0"``, ``"1"``, ...).
            block: The block's name, used to look up signals and in errors.
            on_nonfinite: See `apply`.

        Returns:
            The ``(P,)`` update; the report is in `last_report`.
        """
        table = GradientTable.from_matrices({block: matrix}, objectives)
        updates, _ = self.apply(table, signals, on_nonfinite=on_nonfinite)
        return updates[block]

    def state_dict(self) -> dict[str, Any]:
        """The method's hyper-parameters and state, as ``torch.save``-able data."""
        return {
            "method": self.name,
            "hyperparameters": self.hyperparameters(),
            "state": self._get_state(),
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore state saved by `state_dict`.

        Raises:
            ValueError: If the saved method or hyper-parameters differ from this object's.
        """
        if state_dict.get("method") != self.name:
            raise ValueError(
                f"state_dict is for method {state_dict.get('method')!r}, not {self.name!r}"
            )
        saved = dict(state_dict.get("hyperparameters", {}))
        mine = self.hyperparameters()
        diff = {k: (saved.get(k), v) for k, v in mine.items() if saved.get(k) != v}
        if diff or set(saved) - set(mine):
            raise ValueError(
                f"state_dict hyper-parameters differ from this {type(self).__name__}'s "
                f"(saved, current): {diff or sorted(set(saved) - set(mine))}"
            )
        self._set_state(state_dict.get("state", {}))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"
