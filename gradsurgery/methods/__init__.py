"""The methods: each a thin class around pure functions, registered where it is defined."""

from .basic import Mean, Sum
from .cagrad import CAGrad
from .gmp import GMP
from .ogmge import OGMGE
from .pcgrad import PCGrad

__all__ = ["GMP", "OGMGE", "CAGrad", "Mean", "PCGrad", "Sum"]
