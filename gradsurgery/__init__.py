"""gradsurgery: per-group gradient surgery for PyTorch.

One interface for every method: blocks (named parameter sets) × objectives (named losses)
→ a gradient table → a method → one update per block, written into ``.grad``.
"""

from . import distributed, signals
from ._version import __version__
from .accumulate import Accumulator
from .autograd import backward, gradient_table, write_grads
from .core import (
    Block,
    BlockGradients,
    BlockReport,
    Context,
    CrossBlockMethod,
    Decision,
    ElementwiseMethod,
    GradientTable,
    GradSurgeryWarning,
    GramianPolicy,
    GramianWeighting,
    LossWeighting,
    Method,
    NonFiniteGradientError,
    Report,
    SignalError,
    SignalMap,
)
from .methods import (
    DBMTL,
    DWA,
    FAMO,
    GLS,
    GMP,
    IMTLL,
    OGMGE,
    STCH,
    UW,
    CAGrad,
    GradNorm,
    Mean,
    PCGrad,
    Sum,
)
from .registry import available, build, register

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
    "Accumulator",
    "Block",
    "BlockGradients",
    "BlockReport",
    "CAGrad",
    "Context",
    "CrossBlockMethod",
    "Decision",
    "ElementwiseMethod",
    "GradNorm",
    "GradSurgeryWarning",
    "GradientTable",
    "GramianPolicy",
    "GramianWeighting",
    "LossWeighting",
    "Mean",
    "Method",
    "NonFiniteGradientError",
    "PCGrad",
    "Report",
    "SignalError",
    "SignalMap",
    "Sum",
    "__version__",
    "available",
    "backward",
    "build",
    "distributed",
    "gradient_table",
    "register",
    "signals",
    "write_grads",
]
