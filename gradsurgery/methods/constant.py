"""Constant row weights given in the configuration."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..core.checks import check
from ..core.families import Context, GramianWeighting, Scope
from ..core.method import Decision, Kind
from ..core.table import GradientTable
from ..core.transfer import to_device
from ..registry import register

__all__ = ["Constant"]

_BOTH: frozenset[Kind] = frozenset({"multitask", "multimodal"})

Weights = list[float] | dict[str, float] | None


def _validate(weights: Any) -> Weights:
    """``weights`` as a list of floats, a ``{objective: float}`` dict, or None."""
    if weights is None:
        return None
    if isinstance(weights, Mapping):
        if not weights:
            raise ValueError("hyper-parameter weights must not be empty")
        out: dict[str, float] = {}
        for name, value in weights.items():
            if not isinstance(name, str):
                raise TypeError(
                    f"hyper-parameter weights must map objective names (strings) to numbers, "
                    f"got key {name!r}"
                )
            out[name] = check(f"weights[{name!r}]", value, "float")
        return out
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
        raise TypeError(
            "hyper-parameter weights must be a list of numbers, a {objective: number} "
            f"mapping or None, got {weights!r} ({type(weights).__name__})"
        )
    if len(weights) == 0:
        raise ValueError("hyper-parameter weights must not be empty")
    return [check(f"weights[{i}]", value, "float") for i, value in enumerate(weights)]


@register
class Constant(GramianWeighting):
    r"""Fixed row weights: ``d = Σ_i c_i g_i`` on every step and block.

    The weights come from the configuration, either as a list (one number per objective, in
    the table's row order) or as a mapping from objective name to number (independent of
    the row order). Their number must match the table's objectives at apply time; a mismatch
    raises a ``ValueError`` naming both. Without weights every row gets 1, which is
    `gradsurgery.Sum`; ``1/k`` each is `gradsurgery.Mean`.

    $$d = \sum_{i=1}^{k} c_i\, g_i .$$

    Scale: ``k`` identical rows give ``(Σ_i c_i)·g``, the library's convention exactly when
    the weights sum to ``k``.

    Decides on the device: ``sync=False`` keeps the step free of host synchronisation (see
    the On-device step page).

    Args:
        weights: A list of numbers, a ``{objective: number}`` mapping, or None (all ones).
            Any finite numbers, negative included.
        scope: Accepted for uniformity with the other weightings; it changes nothing here.

    Report details: none.
    """

    name = "constant"
    kinds = _BOTH
    uses_gramian = False
    on_device = True

    def __init__(
        self,
        *,
        weights: list[float] | dict[str, float] | None = None,
        scope: Scope = "block",
    ) -> None:
        super().__init__(scope=scope)
        self.weights: Weights = _validate(weights)

    def check_table(self, table: GradientTable) -> None:
        super().check_table(table)
        names = list(table.objectives)
        if isinstance(self.weights, list) and len(self.weights) != len(names):
            raise ValueError(
                f"Constant has {len(self.weights)} weights {self.weights} but the table has "
                f"{len(names)} objectives {names}"
            )
        if isinstance(self.weights, dict) and set(self.weights) != set(names):
            missing = sorted(set(names) - set(self.weights))
            extra = sorted(set(self.weights) - set(names))
            raise ValueError(
                f"Constant's weights name objectives {sorted(self.weights)} but the table has "
                f"{names} (missing: {missing}, unknown: {extra})"
            )

    def weigh(self, context: Context) -> Decision:
        if self.weights is None:
            values = [1.0] * context.k
        elif isinstance(self.weights, dict):
            values = [self.weights[name] for name in context.objectives]
        else:
            values = list(self.weights)
        return Decision(to_device(torch.tensor(values, dtype=torch.float64), context.device))
