"""Shared test helpers: Hypothesis strategies and the per-method cases of the property suite."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from hypothesis import strategies as st

import gradsurgery as gs

finite = st.floats(min_value=-10.0, max_value=10.0, allow_nan=False, width=64)


@st.composite
def matrices(draw: st.DrawFn, k: int | None = None, max_k: int = 5, max_p: int = 6) -> torch.Tensor:
    """A float64 ``(k, P)`` matrix with entries in [-10, 10] (often with exact zeros)."""
    k = draw(st.integers(1, max_k)) if k is None else k
    p = draw(st.integers(1, max_p))
    values = draw(st.lists(st.one_of(finite, st.just(0.0)), min_size=k * p, max_size=k * p))
    return torch.tensor(values, dtype=torch.float64).reshape(k, p)


@dataclass
class Case:
    """How the property suite drives one method.

    Attributes:
        make: Builds the method with its defaults.
        ks: The numbers of objectives the method accepts (None: any).
        objectives: Row names for ``k`` rows.
        signals: Signals for a block named ``"block"`` given the row names.
        scale: What ``k`` identical rows ``g`` return, as a multiple of ``g``.
        deterministic: Whether the output is a function of the input alone.
    """

    make: Callable[[], gs.Method]
    ks: tuple[int, ...] | None = None
    objectives: Callable[[int], list[str]] = field(default=lambda k: [f"task{i}" for i in range(k)])
    signals: Callable[[list[str]], dict | None] = field(default=lambda names: None)
    scale: Callable[[int], float] = field(default=lambda k: float(k))
    deterministic: bool = True


CASES: dict[str, Case] = {
    "sum": Case(gs.Sum),
    "mean": Case(gs.Mean, scale=lambda k: 1.0),
    "pcgrad": Case(gs.PCGrad, deterministic=False),
    "cagrad": Case(gs.CAGrad),
    # One modality block: ratios are 1, so GMP is CAGP with the tie rule; the multi-block
    # behaviour has its own tests.
    "gmp": Case(gs.GMP, ks=(1, 2), objectives=lambda k: ["cls", "dom"][:k]),
    # The noise is covered by its own tests; the families check the deterministic part.
    "ogmge": Case(lambda: gs.OGMGE(ge=False), ks=(1,), objectives=lambda k: ["loss"]),
}


def run(case: Case, matrix: torch.Tensor, method: gs.Method | None = None) -> torch.Tensor:
    """Apply a case's method to one block."""
    method = case.make() if method is None else method
    names = case.objectives(matrix.shape[0])
    return method(matrix, objectives=names, signals=case.signals(names))
