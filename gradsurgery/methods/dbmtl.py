"""DB-MTL: dual-balancing multi-task learning (Lin et al.; arXiv 2308.12029, 2023)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch

from ..core.checks import check
from ..core.families import Scope
from ..core.gramian import combine
from ..core.method import Decision, Family, Method
from ..core.signals import SignalMap
from ..core.table import BlockGradients, GradientTable
from ..registry import register
from ..solvers.learned import checked_losses, reorder

__all__ = ["DBMTL", "dbmtl_coefficients", "row_norms"]

Normalize = Literal["none", "sum"]

#: A buffer shorter than this fraction of the longest counts as zero (coefficient 0): the
#: ratio max/norm would overflow float64.
_RELATIVE_ZERO = 1e-150


def row_norms(matrix: torch.Tensor) -> torch.Tensor:
    """Euclidean norms of the rows of a ``(k, P)`` matrix, as a float64 CPU tensor.

    Summed in the matrix's dtype; rows whose squared norm under- or overflows are
    recomputed in float64 after dividing by their largest entry, so the norms are right
    from about ``1e-300`` to ``1e300``.
    """
    squares = (matrix * matrix).sum(1)
    info = torch.finfo(matrix.dtype)
    suspect = (squares < info.tiny / info.eps) | ~torch.isfinite(squares)
    norms = squares.to("cpu", torch.float64).sqrt()
    if bool(suspect.any()):
        rows = matrix[suspect].to(torch.float64)
        top = rows.abs().amax(1)
        safe = torch.where(top > 0, top, torch.ones_like(top))
        exact = (rows / safe[:, None]).norm(dim=1) * top
        norms[suspect.cpu()] = exact.cpu()
    return norms


def dbmtl_coefficients(norms: torch.Tensor) -> torch.Tensor:
    """``a_i = max_j ‖ĝ_j‖ / ‖ĝ_i‖`` (0 for a zero buffer): every buffer brought to the
    largest norm."""
    top = norms.max()
    live = norms > top * _RELATIVE_ZERO
    safe = torch.where(live, norms, torch.ones_like(norms))
    return torch.where(live, top / safe, torch.zeros_like(norms))


@register
class DBMTL(Method):
    r"""DB-MTL (Lin et al.; arXiv 2308.12029, 2023, "Dual-Balancing for Multi-Task
    Learning").

    **Loss-scale balancing**: the objectives are ``log(L_i + ε)``, so the rows become
    ``g_i/(L_i + ε)``. **Gradient-magnitude balancing**: an exponential moving average per
    objective,

    $$\hat g_i \leftarrow \beta_t \hat g_i + (1 - \beta_t)\,\frac{g_i}{L_i + \varepsilon},
      \qquad \beta_t = \beta / t^{\sigma},$$

    (buffers start at 0, no bias correction), then every buffer is brought to the largest
    norm:

    $$d = \sum_i a_i \hat g_i, \qquad a_i = \frac{\max_j \lVert\hat g_j\rVert}
      {\lVert\hat g_i\rVert} .$$

    With ``β = 0`` the update is a weighted sum of the current rows,
    ``w_i = max_j(‖g_j‖/(L_j+ε)) / ‖g_i‖``, needing only the row norms; with ``β > 0`` the
    method keeps one ``k × P`` buffer per block (in the rows' dtype, at least float32) and
    the update is not a weighted sum of the current rows (the report marks it non-linear).

    **Scale.** Rows are divided by the losses and brought to the largest norm: no constant
    factor meets the library's convention. The default ``normalize="none"`` keeps the
    paper's scale (note the first step is ``(1 − β)`` of it, as the buffers start at 0).
    ``normalize="sum"`` divides the update by ``Σ_i a_i m_i / k``, where
    ``m_i ← β_t m_i + (1 − β_t)/(L_i + ε)`` is buffer ``i``'s total coefficient over raw
    gradient rows: the coefficients of ``d`` over all raw rows, past and present, then sum
    to ``k``, and ``k`` identical rows give ``k·g`` at every step.

    **Scope.** ``"block"`` (default) computes the norms and ``a`` per block; ``"global"``
    on all blocks taken together (the reference treats all shared parameters as one vector).

    Defaults: ``beta=0.9``, ``sigma=0``, ``eps=1e-8`` (LibMTL), ``normalize="none"``,
    ``scope="block"``.

    Deliberate deviations: a zero buffer gets ``a_i = 0`` (the reference divides by
    ``‖ĝ_i‖ + 1e-8``, a huge but harmless coefficient; an exact 0 keeps the method
    homogeneous), and a buffer below ``1e-150`` of the longest counts as zero; negative or
    non-finite losses raise ``ValueError``. The buffers are kept per block name: a block seen
    for the first time starts at 0.

    State: the step count ``t``, the masses ``m``, the buffers (one ``(k, P)`` tensor per
    block, on the rows' device), bound to the objectives' names.

    Args:
        beta: EMA rate ``β`` of the buffers (``0``: no buffer, a weighted sum).
        sigma: Decay exponent ``σ`` of ``β_t = β / t^σ``.
        eps: Added to the losses (``log(L + ε)``).
        normalize: ``"none"`` (paper scale) or ``"sum"``.
        scope: ``"block"`` or ``"global"``.

    Report details: ``a`` (the buffer coefficients), ``beta_t``, ``step``, ``scale`` (the
    ``normalize`` factor), ``zero`` (objectives whose buffer is zero). The report's weights
    are the coefficients of the *current* rows: ``scale · a_i (1 − β_t)/(L_i + ε)``.
    """

    name = "dbmtl"
    family: ClassVar[Family] = "loss"
    needs_rows = True  # the EMA buffers are built from the rows
    needs_losses = True
    stateful = True

    def __init__(
        self,
        *,
        beta: float = 0.9,
        sigma: float = 0.0,
        eps: float = 1e-8,
        normalize: Normalize = "none",
        scope: Scope = "block",
    ) -> None:
        super().__init__()
        self.beta: float = check("beta", beta, "float", low=0.0, high=1.0)
        if self.beta == 1.0:
            raise ValueError("hyper-parameter beta must be < 1 (the buffers would stay at 0)")
        self.sigma: float = check("sigma", sigma, "float", low=0.0)
        self.eps: float = check("eps", eps, "float", low=0.0, low_open=True)
        self.normalize: Normalize = check("normalize", normalize, "str", options=("none", "sum"))
        self.scope: Scope = check("scope", scope, "str", options=("block", "global"))
        self._clear()

    def _clear(self) -> None:
        self._step = 0
        self._names: tuple[str, ...] | None = None
        self._mass = torch.zeros(0, dtype=torch.float64)
        self._buffers: dict[str, torch.Tensor] = {}
        self._coefficients: dict[str, torch.Tensor] = {}

    def decide(self, table: GradientTable, signals: SignalMap | None) -> dict[str, Decision]:
        owner = type(self).__name__
        losses = checked_losses(table, owner)
        order = reorder(self._names, table.objectives, owner)
        if order is not None:
            self._mass = self._mass[order]
            self._buffers = {name: buf[order] for name, buf in self._buffers.items()}
        for name, block in table.blocks.items():
            previous = self._buffers.get(name)
            if previous is not None and previous.shape != block.matrix.shape:
                raise ValueError(
                    f"{owner}: block {name!r} has shape {tuple(block.matrix.shape)}, its buffer "
                    f"{tuple(previous.shape)}; call reset() after changing the blocks"
                )
        if self._names is None:
            self._mass = torch.zeros_like(losses)
        self._names = table.objectives
        self._step += 1
        beta_t = self.beta / self._step**self.sigma
        inverse = 1.0 / (losses + self.eps)
        self._mass = beta_t * self._mass + (1.0 - beta_t) * inverse
        norms: dict[str, torch.Tensor] = {}
        for name, block in table.blocks.items():
            rows = _scaled_rows(block.matrix, inverse)
            if self.beta > 0:
                previous = self._buffers.get(name)
                buf = (1.0 - beta_t) * rows
                if previous is not None:
                    buf = buf + beta_t * previous.to(rows.device, rows.dtype)
                self._buffers[name] = buf
                rows = buf
            norms[name] = row_norms(rows)
        if self.scope == "global":
            stacked = torch.stack(list(norms.values()))
            top = stacked.amax(0)
            safe = torch.where(top > 0, top, torch.ones_like(top))
            total = (stacked / safe).pow(2).sum(0).sqrt() * top
            norms = dict.fromkeys(norms, total)
        decisions = {}
        for name, block_norms in norms.items():
            a = dbmtl_coefficients(block_norms)
            mass = float((a * self._mass).sum())
            scale = len(a) / mass if self.normalize == "sum" and mass > 0 else 1.0
            self._coefficients[name] = scale * a
            weights = scale * a * (1.0 - beta_t) * inverse
            zero = [o for o, v in zip(table.objectives, a.tolist()) if v == 0]
            details = {
                "a": a.tolist(),
                "beta_t": beta_t,
                "step": self._step,
                "scale": scale,
                "zero": zero,
            }
            decisions[name] = Decision(weights, details=details, linear=self.beta == 0)
        return decisions

    def update(self, block: BlockGradients, decision: Decision) -> torch.Tensor:
        """``Σ_i a_i ĝ_i`` from the block's buffer (the weighted sum when ``β = 0``)."""
        if decision.linear:
            return combine(decision.weights, block.matrix)
        coefficients = self._coefficients[block.name]
        return combine(coefficients, self._buffers[block.name]).to(block.matrix.dtype)

    def reset(self) -> None:
        super().reset()
        self._clear()

    def _get_state(self) -> dict[str, Any]:
        return {
            "step": self._step,
            "names": None if self._names is None else list(self._names),
            "mass": self._mass.clone(),
            "buffers": {name: buf.clone() for name, buf in self._buffers.items()},
        }

    def _set_state(self, state: Mapping[str, Any]) -> None:
        self._step = int(state["step"])
        names = state["names"]
        self._names = None if names is None else tuple(str(n) for n in names)
        self._mass = torch.as_tensor(state["mass"], dtype=torch.float64).clone()
        self._buffers = {str(n): buf.clone() for n, buf in dict(state["buffers"]).items()}
        self._coefficients = {}


def _scaled_rows(matrix: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """``g_i / (L_i + ε)`` in the rows' dtype promoted to at least float32."""
    dtype = torch.promote_types(matrix.dtype, torch.float32)
    return matrix.to(dtype) * inverse.to(matrix.device, dtype)[:, None]
