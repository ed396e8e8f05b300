"""Property-suite cases of the gramian methods: MGDA, IMTL-G, UPGrad, DualProj, Aligned-MTL,
ConFIG (all deterministic, all following the scale convention with their defaults)."""

from __future__ import annotations

from helpers import Case

from gradsurgery.methods.alignedmtl import AlignedMTL
from gradsurgery.methods.config import ConFIG
from gradsurgery.methods.dualproj import DualProj
from gradsurgery.methods.imtlg import IMTLG
from gradsurgery.methods.mgda import MGDA
from gradsurgery.methods.upgrad import UPGrad

CASES: dict[str, Case] = {
    "mgda": Case(MGDA),
    "imtlg": Case(IMTLG),
    "upgrad": Case(UPGrad, scale=lambda k: float(k)),
    "dualproj": Case(DualProj, scale=lambda k: float(k)),
    "alignedmtl": Case(AlignedMTL, scale=lambda k: float(k)),
    "config": Case(ConFIG, scale=lambda k: float(k)),
}
