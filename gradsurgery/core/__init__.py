"""Core data model: blocks, the gradient table, signals, reports, the method interface and
the method families. No solver and no autograd lives here."""

from .blocks import Block, BlockSpec, make_blocks
from .errors import GradSurgeryWarning, NonFiniteGradientError
from .families import Context, CrossBlockMethod, ElementwiseMethod, GramianWeighting, LossWeighting
from .gramian import GramianPolicy
from .method import Decision, Method
from .report import BlockReport, Report
from .signals import SignalError, SignalMap, require_signal
from .table import BlockGradients, GradientTable

__all__ = [
    "Block",
    "BlockGradients",
    "BlockReport",
    "BlockSpec",
    "Context",
    "CrossBlockMethod",
    "Decision",
    "ElementwiseMethod",
    "GradSurgeryWarning",
    "GradientTable",
    "GramianPolicy",
    "GramianWeighting",
    "LossWeighting",
    "Method",
    "NonFiniteGradientError",
    "Report",
    "SignalError",
    "SignalMap",
    "make_blocks",
    "require_signal",
]
