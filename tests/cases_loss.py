"""Property-suite cases of the loss methods.

Every case gets distinct positive losses, so the permutation property really moves the
loss values with the rows. The losses are the same at every call, so the suite checks the
state's plumbing (resume, reset, order of objectives); the loss dynamics are checked in
``tests/methods/test_<name>.py``.
"""

from __future__ import annotations

import math

from helpers import Case

from gradsurgery.methods.dbmtl import DBMTL
from gradsurgery.methods.dwa import DWA
from gradsurgery.methods.famo import FAMO
from gradsurgery.methods.gls import GLS
from gradsurgery.methods.gradnorm import GradNorm
from gradsurgery.methods.imtll import IMTLL
from gradsurgery.methods.stch import STCH
from gradsurgery.methods.uw import UW


def losses(k: int) -> list[float]:
    """Distinct positive losses, 0.5, 1.2, 1.9, ..."""
    return [0.5 + 0.7 * i for i in range(k)]


def _gls_scale(k: int) -> float:
    # Σ_i L_geo / L_i, computed independently of the method.
    values = losses(k)
    geo = math.exp(sum(math.log(v) for v in values) / k)
    return sum(geo / v for v in values)


CASES: dict[str, Case] = {
    # Learned weights, learning at their default rates: every property runs on fresh
    # instances; the learning itself and its resume are checked in tests/methods/.
    "uw": Case(make=UW, losses=losses),
    "imtll": Case(make=IMTLL, losses=losses),
    # One epoch per call, so the epoch means (and their ratios) are exercised.
    "dwa": Case(make=lambda: DWA(epoch_length=1), losses=losses),
    "gradnorm": Case(make=GradNorm, losses=losses),
    # Σ w = k for any losses; equal losses at two calls give δ = 0, so ξ does not move.
    "famo": Case(make=FAMO, losses=losses),
    # Σ w = Σ_i L_geo / L_i: k only when the losses are equal.
    "gls": Case(make=GLS, losses=losses, scale=_gls_scale),
    # The paper's scale has no constant factor; normalize="sum" follows the convention.
    "dbmtl": Case(
        make=DBMTL,
        losses=losses,
        linear=False,
        scale_variant=lambda: DBMTL(normalize="sum"),
        scale_exception="DB-MTL rescales every row to the largest gradient norm (paper scale)",
    ),
    # One warm-up epoch of one call, then the smooth Tchebycheff phase with its nadir.
    "stch": Case(
        make=lambda: STCH(warmup_epochs=1, epoch_length=1),
        losses=losses,
        scale_variant=lambda: STCH(warmup_epochs=1, epoch_length=1, normalize="sum"),
        scale_exception="the weights divide by the losses (1/L_i in the warm-up, "
        "k·softmax/L_i after); normalize='sum' follows the convention",
    ),
}
