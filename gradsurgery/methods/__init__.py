"""The methods: each a thin class around pure functions, registered where it is defined.

Every module of this package is imported here, so a new method is one new file: its
``@register`` decorator makes it buildable by name.
"""

import importlib
import pkgutil

from .basic import Mean, Sum
from .cagrad import CAGrad
from .dbmtl import DBMTL
from .dwa import DWA
from .famo import FAMO
from .gls import GLS
from .gmp import GMP
from .gradnorm import GradNorm
from .imtll import IMTLL
from .ogmge import OGMGE
from .pcgrad import PCGrad
from .stch import STCH
from .uw import UW

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "DBMTL",
    "DWA",
    "FAMO",
    "GLS",
    "GMP",
    "IMTLL",
    "OGMGE",
    "STCH",
    "UW",
    "CAGrad",
    "GradNorm",
    "Mean",
    "PCGrad",
    "Sum",
]
