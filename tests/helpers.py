"""Shared test helpers: Hypothesis strategies and the per-method cases of the property suite.

Each method joins the property suite through one `Case` in one of the ``cases_*.py`` files
(grouped by family), merged into `CASES` here.
"""

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
        seeded: Builds the method with a given seed (stochastic methods: their permutation
            property is checked in expectation over seeds).
        ks: The numbers of objectives the method accepts (None: any).
        objectives: Row names for ``k`` rows.
        signals: Signals for a block named ``"block"`` given the row names.
        losses: Loss values for ``k`` objectives (loss-based methods), or None.
        scale: What ``k`` identical rows ``g`` return, as a multiple of ``g``.
        scale_variant: For methods outside the scale convention by default: builds the
            opt-in variant that follows it (e.g. ``normalize="sum"``); the scale test runs
            on it, and `scale_exception` says why the default differs.
        scale_exception: Why the default is outside the scale convention.
        degree: Degree of positive homogeneity: ``m(c·G) = c**degree · m(G)`` for c > 0.
        linear: Whether the report's weights reproduce the update (False: element-wise).
        conditioned: For solver-based methods whose update amplifies the solver's tolerance:
            whether the last decision was conditioned well enough for the homogeneity
            property's tolerance (read from the method's report).
    """

    make: Callable[[], gs.Method]
    seeded: Callable[[int], gs.Method] | None = None
    ks: tuple[int, ...] | None = None
    objectives: Callable[[int], list[str]] = field(default=lambda k: [f"task{i}" for i in range(k)])
    signals: Callable[[list[str]], dict | None] = field(default=lambda names: None)
    losses: Callable[[int], list[float]] | None = None
    scale: Callable[[int], float] = field(default=lambda k: float(k))
    scale_variant: Callable[[], gs.Method] | None = None
    scale_exception: str = ""
    degree: float = 1.0
    linear: bool = True
    conditioned: Callable[[gs.Method], bool] | None = None


def run(case: Case, matrix: torch.Tensor, method: gs.Method | None = None) -> torch.Tensor:
    """Apply a case's method to one block."""
    method = case.make() if method is None else method
    names = case.objectives(matrix.shape[0])
    losses = case.losses(matrix.shape[0]) if case.losses is not None else None
    return method(matrix, objectives=names, signals=case.signals(names), losses=losses)


from cases_basic import CASES as _BASIC  # noqa: E402
from cases_gramian import CASES as _GRAMIAN  # noqa: E402
from cases_loss import CASES as _LOSS  # noqa: E402
from cases_multimodal import CASES as _MULTIMODAL  # noqa: E402
from cases_stochastic import CASES as _STOCHASTIC  # noqa: E402

CASES: dict[str, Case] = {**_BASIC, **_GRAMIAN, **_STOCHASTIC, **_LOSS, **_MULTIMODAL}
