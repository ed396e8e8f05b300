"""GLS: the geometric loss strategy (Chennupati et al.; CVPR Workshops 2019)."""

from __future__ import annotations

import torch

from ..core.checks import check
from ..core.families import Context, LossWeighting
from ..core.method import Decision
from ..registry import register
from ..solvers.learned import checked_losses

__all__ = ["GLS", "gls_weights"]


def gls_weights(losses: torch.Tensor, eps: float = 1e-8) -> tuple[torch.Tensor, float]:
    """GLS's row weights ``L_geo / L_i`` (library scale) and the geometric mean ``L_geo``.

    Computed in log space: ``w_i = exp(mean_j log L_j − log L_i)``, with losses below
    ``eps`` taken as ``eps``.
    """
    logs = torch.log(losses.clamp_min(eps))
    mean = logs.mean()
    return torch.exp(mean - logs), float(torch.exp(mean))


@register
class GLS(LossWeighting):
    r"""GLS, the geometric loss strategy (Chennupati et al.; CVPR
    Workshops 2019, "MultiNet++: Multi-Stream Feature Aggregation and Geometric Loss
    Strategy for Multi-Task Learning").

    The scalarised loss is the geometric mean of the losses,

    $$L_{geo} = \Bigl(\prod_{i=1}^k L_i\Bigr)^{1/k},$$

    whose gradient puts the weight ``L_geo / (k L_i)`` on ``g_i``. The library multiplies by
    ``k`` (the convention's factor for a mean): ``w_i = L_geo / L_i``, so equal losses give
    the plain sum, and a small loss gets a large weight. Computed in log space.

    Deliberate deviations: losses below ``eps`` (default ``1e-8``) count as ``eps`` (the
    geometric mean is undefined at 0 and the weight of a vanishing loss explodes); negative
    or non-finite losses raise ``ValueError``. LibMTL reports ``L_i/(k ΠL)`` as its
    "weights"; the weights here are the effective gradient weights of its backward.

    No state.

    Args:
        eps: Floor of the losses.

    Report details: ``geometric_mean`` (``L_geo``).
    """

    name = "gls"

    def __init__(self, *, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps: float = check("eps", eps, "float", low=0.0, low_open=True)

    def weigh_losses(self, context: Context) -> Decision:
        losses = checked_losses(context.table, type(self).__name__)
        weights, geo = gls_weights(losses, self.eps)
        return Decision(weights, details={"geometric_mean": geo})
