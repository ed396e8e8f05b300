"""The method interface: (gradient table, signals) → one update per block + a report."""

from __future__ import annotations

import abc
import dataclasses
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from .errors import NonFiniteGradientError
from .report import BlockReport, Report
from .signals import SignalMap
from .table import BlockGradients, GradientTable

__all__ = ["STATE_FORMAT", "Decision", "Family", "Kind", "Method", "OnNonFinite", "copy_decision"]

OnNonFinite = Literal["raise", "skip"]
Family = Literal["gramian", "cross_block", "loss", "elementwise"]
Kind = Literal["multitask", "multimodal"]

#: Version of the `Method.state_dict` layout.
STATE_FORMAT = 1


@dataclass
class Decision:
    """A method's decision for one block: row weights and what it did.

    Attributes:
        weights: ``(k,)`` coefficients over the original rows (float64 on the host; on
            the Gramian's device for a decision without host synchronisation).
        projected: Objectives whose rows were projected, or a ``(k,)`` boolean mask over
            the rows (a decision on the device, read when the report is).
        details: Method-specific values for the report.
        linear: Set to False by `Method.update` when the update is more than
            ``Σ_i weights[i] g_i`` (noise, element-wise masks).
        valid: For a decision on the device, a 0-d boolean tensor that is False when a
            data-dependent input was invalid (a signal out of range): the step is then
            skipped, as on non-finite rows, instead of raising.
    """

    weights: torch.Tensor
    projected: tuple[str, ...] | torch.Tensor = ()
    details: dict[str, Any] = field(default_factory=dict)
    linear: bool = True
    valid: torch.Tensor | None = None


class Method(abc.ABC):
    """Base class of every gradient-surgery method.

    A method decides, from the gradient table (usually only its ``k x k`` Gramians, the
    signals or the loss values), one weight per gradient row of each block; the update of a
    block is then one weighted pass over its rows (`update`, which element-wise methods
    replace). Subclass one of the families in `gradsurgery.core.families` rather than this
    class: they own the loops. The math lives in pure functions; the class holds validated
    hyper-parameters (keyword-only constructor arguments, each stored as the attribute of
    the same name) and explicit state.

    Scale convention: on ``k`` identical rows ``g`` every method returns ``k·g``, the plain
    sum, unless its documentation declares otherwise (``Mean`` returns ``g``).

    Class attributes declare what a method needs, so the core serves it and
    `gradsurgery.available` can filter on it.
    """

    name: ClassVar[str] = ""
    """Registered name, used by `gradsurgery.build`."""
    family: ClassVar[Family]
    """``"gramian"``, ``"cross_block"``, ``"loss"`` or ``"elementwise"``."""
    kinds: ClassVar[frozenset[Kind]] = frozenset({"multitask"})
    """The settings it is meant for: ``"multitask"`` and/or ``"multimodal"``."""
    min_objectives: ClassVar[int] = 1
    """The fewest objectives it takes."""
    max_objectives: ClassVar[int | None] = None
    """The most objectives it takes (``None``: any number)."""
    needs_signals: ClassVar[tuple[str, ...]] = ()
    """The signals it reads, described (empty: none)."""
    needs_losses: ClassVar[bool] = False
    """Whether it reads the objectives' loss values from the table."""
    stateful: ClassVar[bool] = False
    """Whether it keeps state across steps (saved by `state_dict`)."""
    uses_gramian: ClassVar[bool] = False
    """Whether its decision reads the blocks' Gramians (computed before it decides)."""
    on_device: ClassVar[bool] = False
    """Whether its decision runs on the rows' device without host synchronisation (closed
    form or a fixed number of small iterations), so ``apply(..., sync=False)`` and a
    compiled step can take it."""
    on_device_settings: ClassVar[Mapping[str, Any]] = {}
    """Hyper-parameters that select the on-device path where the defaults do not (MGDA:
    ``{"solver": "frank_wolfe"}``)."""
    needs_rows: ClassVar[bool] = False
    """Whether it reads the gradient rows themselves (element-wise steps, noise from the
    rows' statistics, tracked gradients), which memory-light engines do not keep."""
    not_hyperparameters: ClassVar[tuple[str, ...]] = ("generator",)
    """Constructor arguments that are not saved as hyper-parameters."""

    def __init__(self) -> None:
        self.last_report: Report | None = None

    # -- to implement ------------------------------------------------------------------

    @abc.abstractmethod
    def decide(self, table: GradientTable, signals: SignalMap | None) -> dict[str, Decision]:
        """Return one `Decision` per block of ``table``."""

    def update(self, block: BlockGradients, decision: Decision) -> torch.Tensor:
        """Form one block's ``(P,)`` update from its rows and the decision.

        The default is the weighted sum ``Σ_i w_i g_i``. This is the one place to transform
        rows or the update element-wise (GradDrop's masks, OGM-GE's noise); an override
        that goes beyond the weighted sum sets ``decision.linear = False``.
        """
        return block.combine(decision.weights)

    def _get_state(self) -> dict[str, Any]:
        return {}

    def _set_state(self, state: Mapping[str, Any]) -> None:
        if state:
            raise KeyError(f"{type(self).__name__} keeps no state, got keys {sorted(state)}")

    def reset(self) -> None:
        """Return to the state right after construction."""
        self.last_report = None

    def set_epoch(self, epoch: int) -> None:
        """Tell the method that a new epoch starts (call it at every epoch boundary).

        Methods with epoch schedules or epoch statistics (OGM-GE's window, DWA's epoch
        losses) override it; for the others it does nothing, so a training loop can call it
        whatever the method.
        """
        return None

    # -- provided ----------------------------------------------------------------------

    @classmethod
    def hyperparameter_names(cls) -> list[str]:
        """The keyword-only constructor arguments saved as hyper-parameters."""
        params = inspect.signature(cls.__init__).parameters.values()
        return [
            p.name
            for p in params
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in cls.not_hyperparameters
        ]

    def hyperparameters(self) -> dict[str, Any]:
        """The constructor's keyword arguments, as validated (derived from the signature)."""
        out = {}
        for name in self.hyperparameter_names():
            if not hasattr(self, name):
                raise TypeError(
                    f"{type(self).__name__} takes hyper-parameter {name!r} but keeps no "
                    f"attribute {name!r}; store it as self.{name}"
                )
            out[name] = getattr(self, name)
        return out

    def host_only(self) -> str | None:
        """Why this instance cannot decide on the device, or ``None`` when it can.

        ``None`` exactly when the class declares `on_device`, unless a hyper-parameter
        selects a host-only path (MGDA's exact solver).
        """
        if self.on_device:
            return None
        return (
            f"{type(self).__name__} ({self.name!r}) decides on the host (a solver with a "
            "data-dependent number of iterations, an eigendecomposition, or NumPy/SciPy)"
        )

    def check_on_device(self, on_nonfinite: OnNonFinite = "skip") -> None:
        """Raise a clear error unless this instance can run a ``sync=False`` step with
        ``on_nonfinite``.

        Raises:
            ValueError: If it decides on the host (`host_only`), or ``on_nonfinite`` is
                ``"raise"``: a step that does not wait for the device cannot raise on what
                the device finds.
        """
        reason = self.host_only()
        if reason is not None:
            raise ValueError(
                f"sync=False: {reason}; use sync=True. Methods that decide on the device: "
                "gradsurgery.available(on_device=True)"
            )
        if on_nonfinite != "skip":
            raise ValueError(
                "sync=False needs on_nonfinite='skip': a step that does not wait for the "
                "device cannot raise on what it finds there; such a step writes the plain sum "
                "(non-finite, so GradScaler skips it) and report.skipped says so when read"
            )

    def reads_losses(self) -> bool:
        """Whether this instance reads the loss values: `needs_losses`, unless a
        hyper-parameter decides it (MGDA's loss normalisations)."""
        return self.needs_losses

    def check_table(self, table: GradientTable) -> None:
        """Raise a clear error when the table does not fit the method's declared needs."""
        k = table.k
        high = self.max_objectives
        if k < self.min_objectives or (high is not None and k > high):
            allowed = (
                f"exactly {high}"
                if high == self.min_objectives
                else f"{self.min_objectives} to {high}"
                if high is not None
                else f"at least {self.min_objectives}"
            )
            raise ValueError(
                f"{type(self).__name__} takes {allowed} objective(s), got {k}: "
                f"{list(table.objectives)}"
            )
        if self.needs_rows and not all(b.has_rows for b in table.blocks.values()):
            raise ValueError(
                f"{type(self).__name__} reads the gradient rows themselves, which the engine "
                f"{table.engine!r} does not keep; use engine='table'"
            )
        if self.reads_losses() and table.losses is None:
            raise ValueError(
                f"{type(self).__name__} reads the objectives' loss values, but the table has "
                "none; build it with gradsurgery.gradient_table (or pass losses= to "
                "GradientTable.from_matrices / the method call)"
            )

    def apply(
        self,
        table: GradientTable,
        signals: SignalMap | None = None,
        *,
        on_nonfinite: OnNonFinite = "raise",
        diagnostics: bool = False,
        sync: bool = True,
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
            diagnostics: Compute every block's Gramian for the report's cosines and
                conflicts even when the method does not need it (one pass over the rows).
            sync: ``False`` keeps the Gramian, the decision and the combine on the rows'
                device with no host synchronisation (methods with ``on_device = True``
                only; see `apply_on_device`). It needs ``on_nonfinite="skip"``: a step that
                does not wait for the device cannot raise on what the device finds.

        Returns:
            ``(updates, report)``: ``updates[block]`` is a ``(P,)`` tensor in the block's
            dtype and device.
        """
        if on_nonfinite not in ("raise", "skip"):
            raise ValueError(f"on_nonfinite must be 'raise' or 'skip', got {on_nonfinite!r}")
        if not sync:
            self.check_on_device(on_nonfinite)
            return self.apply_on_device(table, signals, diagnostics=diagnostics)
        self.check_table(table)
        if self.uses_gramian or diagnostics:
            # Gramians first: an overflow is found before any state advances, and a
            # Gramian of the rows also tells whether they are finite (one pass fewer).
            try:
                for block in table.blocks.values():
                    _ = block.gramian
            except NonFiniteGradientError as error:
                if on_nonfinite == "raise":
                    raise
                return self._plain_sum(table, note=f"skipped: {error}")
        if not table.finite():
            bad = table.nonfinite_rows()
            where = "; ".join(f"block {name!r}, objective(s) {rows}" for name, rows in bad.items())
            message = f"non-finite gradient (NaN or Inf) in {where}"
            if on_nonfinite == "raise":
                raise NonFiniteGradientError(
                    f"{message}; pass on_nonfinite='skip' to skip the surgery on such steps"
                )
            return self._plain_sum(table, note=f"skipped: {message}")
        decisions = self.decide(table, signals)
        updates: dict[str, torch.Tensor] = {}
        blocks: dict[str, BlockReport] = {}
        for name, block in table.blocks.items():
            decision = decisions[name]
            updates[name] = self.update(block, decision)
            blocks[name] = BlockReport(
                weights=decision.weights,
                changed=not decision.linear or not bool((decision.weights == 1).all()),
                projected=decision.projected,
                details=decision.details,
                linear=decision.linear,
                gramian=block.gramian if block.has_gramian else None,
                objectives=table.objectives,
            )
        report = Report(self.name, table.objectives, blocks, engine=table.engine)
        self.last_report = report
        return updates, report

    def apply_on_device(
        self,
        table: GradientTable,
        signals: SignalMap | None = None,
        *,
        diagnostics: bool = False,
    ) -> tuple[dict[str, torch.Tensor], Report]:
        """`apply` without host synchronisation: every value stays on the rows' device.

        The Gramians are taken on the rows' device in the policy's dtype (the extreme-
        magnitude rescue of `compute_gramian` needs a host check, so here a row whose
        squared norm underflows the working dtype counts as zero and an overflowing Gramian
        skips the step). The method decides in torch on that device. Whether the step is
        skipped — a non-finite row, a non-finite Gramian, or an invalid data-dependent input
        such as a signal out of range — is a device flag: the weights become all ones
        there (the plain sum, non-finite when the rows are), and `Report.skipped` reads the
        flag on first access. Report weights, flags and details are device tensors until
        read. State that does not depend on the data (a generator's draws) advances on
        skipped steps too.

        Raises:
            ValueError: If the method does not decide on the device (``on_device`` is
                False) or the table does not fit the method.
        """
        self.check_on_device()
        self.check_table(table)
        for block in table.blocks.values():
            if block.has_rows and not block.has_gramian:
                # Rows at hand: their Gramian is taken right here, on their device.
                block.policy = dataclasses.replace(block.policy, device="native", rescale=False)
            if block.policy.synchronizes:
                raise ValueError(
                    f"block {block.name!r}: its Gramian source keeps a policy that waits for "
                    "the device; build the table with GramianPolicy(device='native', "
                    "rescale=False), as backward(..., sync=False) does"
                )
        flags = []
        if self.uses_gramian or diagnostics:
            for block in table.blocks.values():
                gramian = block.gramian
                if not block.has_rows:  # a source's Gramian may overflow on finite rows
                    flags.append(torch.isfinite(gramian).all())
        # A Gramian just taken from the rows says whether they are finite (no extra pass).
        flags += [block.finite() for block in table.blocks.values()]
        decisions = self.decide(table, signals)
        ok = torch.stack([f.to(flags[0].device) for f in flags]).all()
        for decision in decisions.values():
            if decision.valid is not None:
                ok = ok & decision.valid.to(ok.device)
        updates: dict[str, torch.Tensor] = {}
        blocks: dict[str, BlockReport] = {}
        for name, block in table.blocks.items():
            decision = decisions[name]
            device = flags[0].device if not block.has_rows else block.matrix.device
            weights = decision.weights.to(device)
            ones = torch.ones_like(weights)
            weights = torch.where(ok.to(device), weights, ones)
            decision.weights = weights
            updates[name] = self.update(block, decision)
            projected = decision.projected
            if isinstance(projected, torch.Tensor):
                projected = projected.to(device) & ok.to(device)
            blocks[name] = BlockReport(
                weights=weights,
                changed=(weights != 1).any() if decision.linear else True,
                projected=projected,
                details=decision.details,
                linear=decision.linear,
                gramian=block.gramian if block.has_gramian else None,
                objectives=table.objectives,
            )
        report = Report(
            self.name,
            table.objectives,
            blocks,
            skipped_flag=~ok,
            engine=table.engine,
            skip_reason=(
                "skipped: non-finite gradient rows or Gramian, or an invalid signal, on a step "
                "without host synchronisation"
            ),
        )
        self.last_report = report
        return updates, report

    def _plain_sum(self, table: GradientTable, note: str) -> tuple[dict[str, torch.Tensor], Report]:
        ones = torch.ones(table.k, dtype=torch.float64)
        updates = {name: b.combine(ones) for name, b in table.blocks.items()}
        blocks = {name: BlockReport(weights=ones, changed=False) for name in table.blocks}
        report = Report(
            self.name,
            table.objectives,
            blocks,
            skipped_flag=True,
            notes=[note],
            engine=table.engine,
        )
        self.last_report = report
        return updates, report

    def __call__(
        self,
        matrix: torch.Tensor,
        /,
        *,
        signals: SignalMap | None = None,
        objectives: Sequence[str] | None = None,
        losses: torch.Tensor | Sequence[float] | None = None,
        block: str = "block",
        on_nonfinite: OnNonFinite = "raise",
        diagnostics: bool = False,
    ) -> torch.Tensor:
        """Apply the method to one block given as a plain ``(k, P)`` tensor.

        Args:
            matrix: ``(k, P)`` gradient rows (a ``(P,)`` vector counts as ``k = 1``).
            signals: Signals, keyed by ``block`` then objective.
            objectives: Row names (default ``"0"``, ``"1"``, ...).
            losses: The objectives' loss values, for methods that read them.
            block: The block's name, used to look up signals and in errors.
            on_nonfinite: See `apply`.
            diagnostics: See `apply`.

        Returns:
            The ``(P,)`` update; the report is in `last_report`.
        """
        table = GradientTable.from_matrices({block: matrix}, objectives, losses=losses)
        updates, _ = self.apply(table, signals, on_nonfinite=on_nonfinite, diagnostics=diagnostics)
        return updates[block]

    def state_dict(self) -> dict[str, Any]:
        """The method's hyper-parameters and state, as ``torch.save``-able data."""
        return {
            "format": STATE_FORMAT,
            "method": self.name,
            "hyperparameters": self.hyperparameters(),
            "state": self._get_state(),
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore state saved by `state_dict`.

        Raises:
            ValueError: If the saved format is newer than this library reads, or the saved
                method or hyper-parameters differ from this object's.
        """
        fmt = state_dict.get("format", 0)
        if not isinstance(fmt, int) or fmt > STATE_FORMAT:
            raise ValueError(
                f"state_dict has format {fmt!r}; this version of gradsurgery reads formats up "
                f"to {STATE_FORMAT}"
            )
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


def copy_decision(decision: Decision) -> Decision:
    """A shallow copy of a decision, for sharing one decision across blocks."""
    return dataclasses.replace(decision, details=dict(decision.details))
