"""Core data model: blocks, the gradient table, signals, reports and the method interface."""

from .blocks import Block, make_blocks
from .method import Decision, Method, NonFiniteGradientError
from .report import BlockReport, Report
from .signals import SignalError, SignalMap, require_signal
from .table import BlockGradients, GradientTable

__all__ = [
    "Block",
    "BlockGradients",
    "BlockReport",
    "Decision",
    "GradientTable",
    "Method",
    "NonFiniteGradientError",
    "Report",
    "SignalError",
    "SignalMap",
    "make_blocks",
    "require_signal",
]
