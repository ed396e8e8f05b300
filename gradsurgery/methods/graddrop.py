"""GradDrop: gradient sign dropout (Chen et al., NeurIPS 2020)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..core.checks import check
from ..core.families import ElementwiseMethod
from ..core.method import Decision
from ..core.rng import SeededGenerator
from ..core.table import BlockGradients, GradientTable
from ..registry import register

__all__ = ["GradDrop", "graddrop_update", "positive_sign_purity"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def positive_sign_purity(matrix: torch.Tensor) -> torch.Tensor:
    """``P = ½ (1 + Σ_i g_i / Σ_i |g_i|)`` per column; 0.5 on all-zero columns.

    Summed in the rows' dtype (float32 for half precisions), returned in float64.
    """
    work = matrix.to(torch.float32 if matrix.dtype in _LOW_PRECISION else matrix.dtype)
    total = work.sum(0)
    mass = work.abs().sum(0)
    safe = torch.where(mass > 0, mass, torch.ones_like(mass))
    purity = torch.where(mass > 0, 0.5 * (1.0 + total / safe), torch.full_like(mass, 0.5))
    return purity.to(torch.float64)


def graddrop_update(
    matrix: torch.Tensor, uniform: torch.Tensor, leak: Sequence[float] | None = None
) -> torch.Tensor:
    """GradDrop's update for given uniform draws (one per column).

    Keeps ``g_ip`` when ``P_p > U_p`` and ``g_ip > 0``, or ``P_p < U_p`` and ``g_ip < 0``; a
    leak ``ℓ_i`` keeps that fraction of row ``i`` regardless:
    ``d_p = Σ_i (ℓ_i + (1 − ℓ_i) M_ip) g_ip``.

    Args:
        matrix: ``(k, P)`` gradient rows.
        uniform: ``(P,)`` draws in [0, 1] (any float dtype; compared in float64).
        leak: ``k`` leak values in [0, 1] (default none).

    Returns:
        The ``(P,)`` update, in the matrix's dtype and on its device.
    """
    work_dtype = torch.float32 if matrix.dtype in _LOW_PRECISION else matrix.dtype
    work = matrix.to(work_dtype)
    purity = positive_sign_purity(matrix)
    u = uniform.to(device=matrix.device, dtype=torch.float64)
    keep = ((purity > u) & (work > 0)) | ((purity < u) & (work < 0))
    coefficient = keep.to(work_dtype)
    if leak is not None:
        ell = torch.tensor(list(leak), dtype=work_dtype, device=matrix.device)[:, None]
        coefficient = ell + (1 - ell) * coefficient
    return (coefficient * work).sum(0).to(matrix.dtype)


@register
class GradDrop(ElementwiseMethod):
    r"""GradDrop (Chen, Ngiam, Huang, Luong, Kretzschmar, Chai, Anguelov; NeurIPS 2020,
    "Just Pick a Sign: Optimizing Deep Multitask Models with Gradient Sign Dropout"),
    Algorithm 1, on parameter-space rows.

    Per coordinate ``p`` of a block, the positive sign purity of the objectives' gradients
    and a uniform draw ``U_p`` decide which sign survives:

    $$P_p = \tfrac12\Big(1 + \frac{\sum_i g_{ip}}{\sum_i |g_{ip}|}\Big),\qquad
      M_{ip} = [P_p > U_p]\,[g_{ip} > 0] + [P_p < U_p]\,[g_{ip} < 0],$$

    $$d_p = \sum_i \big(\ell_i + (1 - \ell_i) M_{ip}\big)\, g_{ip} .$$

    With no leak it is unbiased for the sum: ``E[d_p] = Σ_i g_ip``; ``k`` identical rows are
    pure in every coordinate and give ``k·g`` exactly.

    Deliberate choices:

    * **Where.** The paper applies the mask to gradients with respect to a layer's
      activations (with a ``sign(A)`` factor), summed over the batch; here, as in TorchJD, it
      applies to each parameter block's rows, one draw per parameter.
    * ``f`` (a monotone map of ``P``) is the identity, the paper's default.
    * An all-zero column has ``P = ½`` (the references give NaN or add 1e-7); it contributes
      zero either way.
    * **Randomness.** ``U_p = Φ(z_p)`` with ``z_p`` standard normal from the method's
      seedable generator (drawn on the block's device, see `gradsurgery.core.rng`) and
      ``Φ`` the normal CDF in float64: exactly uniform, and a seed fixes every draw for a
      device type. Draws are independent across blocks and steps.

    State: the generator only.

    Args:
        leak: ``k`` leak values ``ℓ_i ∈ [0, 1]`` (1: never drop objective ``i``), in the
            table's row order; None for no leak. The length must match ``k`` at apply time.
        seed: Seed of the generator (used when ``generator`` is None).
        generator: A CPU ``torch.Generator`` to draw from instead.

    Report details: none (the masks are not kept: they are as large as the block).
    """

    name = "graddrop"
    stateful = True

    def __init__(
        self,
        *,
        leak: list[float] | None = None,
        seed: int = 0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if leak is not None:
            if isinstance(leak, (str, bytes)) or not isinstance(leak, Sequence):
                raise TypeError(
                    f"hyper-parameter leak must be a list of numbers in [0, 1] or None, got "
                    f"{leak!r} ({type(leak).__name__})"
                )
            leak = [check(f"leak[{i}]", v, "float", low=0.0, high=1.0) for i, v in enumerate(leak)]
        self.leak: list[float] | None = leak
        self.seed: int = check("seed", seed, "int")
        self._rng = SeededGenerator(seed, generator)

    def check_table(self, table: GradientTable) -> None:
        super().check_table(table)
        if self.leak is not None and len(self.leak) != table.k:
            raise ValueError(
                f"GradDrop has {len(self.leak)} leak values {self.leak} but the table has "
                f"{table.k} objectives {list(table.objectives)}"
            )

    def transform(self, block: BlockGradients, decision: Decision) -> torch.Tensor:
        matrix = block.matrix
        z = self._rng.randn_like(matrix[0]).to(torch.float64)
        uniform = 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))
        return graddrop_update(matrix, uniform, self.leak)

    def reset(self) -> None:
        super().reset()
        self._rng.reset()

    def _get_state(self) -> dict[str, Any]:
        return self._rng.state()

    def _set_state(self, state: Mapping[str, Any]) -> None:
        self._rng.load(state)
