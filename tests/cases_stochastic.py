"""Property-suite cases of GradVac, Nash-MTL, FairGrad, MoCo, SDMGrad, Random, Constant and
GradDrop (stochastic and deterministic alike)."""

from __future__ import annotations

from helpers import Case

from gradsurgery.methods.constant import Constant
from gradsurgery.methods.fairgrad import FairGrad
from gradsurgery.methods.graddrop import GradDrop
from gradsurgery.methods.gradvac import GradVac
from gradsurgery.methods.moco import MoCo
from gradsurgery.methods.nashmtl import NashMTL
from gradsurgery.methods.random import Random
from gradsurgery.methods.sdmgrad import SDMGrad

CASES: dict[str, Case] = {
    # Random visiting orders for k >= 3: permutation-equivariant in expectation.
    "gradvac": Case(GradVac, seeded=lambda s: GradVac(seed=s)),
    # ‖d‖ = √k, clipped to 1: degree 0 in the gradients.
    "nashmtl": Case(
        NashMTL,
        degree=0.0,
        scale_variant=lambda: NashMTL(normalize="sum"),
        scale_exception="the bargaining solution has norm √k whatever the gradients' scale "
        "(then clipped to max_norm); normalize='sum' rescales it to Σα = k",
    ),
    # α = 1: the update scales as c^((1−α)/(1+α)) = c^0.
    "fairgrad": Case(
        FairGrad,
        degree=0.0,
        scale_variant=lambda: FairGrad(normalize="sum"),
        scale_exception="the α-fair update scales as c^((1−α)/(1+α)) when the rows are "
        "multiplied by c; normalize='sum' rescales the weights to Σw = k",
    ),
    # The update combines tracked rows, not this step's: element-wise.
    "moco": Case(MoCo, linear=False),
    "sdmgrad": Case(SDMGrad),
    "random": Case(Random, seeded=lambda s: Random(seed=s)),
    # Weights by objective name (a positional list cannot be permutation-equivariant); they
    # sum to k = 3, so identical rows give their sum.
    "constant": Case(
        lambda: Constant(weights={"task0": 0.5, "task1": 1.0, "task2": 1.5}),
        ks=(3,),
    ),
    "graddrop": Case(GradDrop, seeded=lambda s: GradDrop(seed=s), linear=False),
}
