"""The methods: each a thin class around pure functions, registered where it is defined.

Every module of this package is imported here, so a new method is one new file: its
``@register`` decorator makes it buildable by name.
"""

import importlib
import pkgutil

from .agm import AGM
from .alignedmtl import AlignedMTL
from .basic import Mean, Sum
from .cagrad import CAGrad
from .cggm import CGGM
from .config import ConFIG
from .constant import Constant
from .dbmtl import DBMTL
from .dualproj import DualProj
from .dwa import DWA
from .fairgrad import FairGrad
from .famo import FAMO
from .gls import GLS
from .gmp import GMP
from .graddrop import GradDrop
from .gradnorm import GradNorm
from .gradvac import GradVac
from .imtlg import IMTLG
from .imtll import IMTLL
from .mgda import MGDA
from .mmpareto import MMPareto
from .moco import MoCo
from .nashmtl import NashMTL
from .ogmge import OGMGE
from .pcgrad import PCGrad
from .pmr import PMR
from .random import Random
from .sdmgrad import SDMGrad
from .stch import STCH
from .upgrad import UPGrad
from .uw import UW

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "AGM",
    "CGGM",
    "DBMTL",
    "DWA",
    "FAMO",
    "GLS",
    "GMP",
    "IMTLG",
    "IMTLL",
    "MGDA",
    "OGMGE",
    "PMR",
    "STCH",
    "UW",
    "AlignedMTL",
    "CAGrad",
    "ConFIG",
    "Constant",
    "DualProj",
    "FairGrad",
    "GradDrop",
    "GradNorm",
    "GradVac",
    "MMPareto",
    "Mean",
    "MoCo",
    "NashMTL",
    "PCGrad",
    "Random",
    "SDMGrad",
    "Sum",
    "UPGrad",
]
