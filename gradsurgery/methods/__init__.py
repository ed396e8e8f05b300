"""The methods: each a thin class around pure functions of the Gramian and the signals."""

from .basic import Mean, Sum
from .cagrad import CAGrad
from .pcgrad import PCGrad

__all__ = ["CAGrad", "Mean", "PCGrad", "Sum"]
