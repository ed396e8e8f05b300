"""Projections computed on coefficient vectors in Gramian space.

A vector in the span of the gradient rows is held as its coefficients ``a`` over the rows
(``v = aᵀ G``). Dot products are then ``aᵀ (G Gᵀ) b``, so projecting one combination onto
the normal plane of another costs ``O(k²)`` and never touches the ``P`` columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..core.transfer import to_device

__all__ = ["dot", "project_conflicting", "reject"]


def dot(a: torch.Tensor, b: torch.Tensor, gramian: torch.Tensor) -> torch.Tensor:
    """``(aᵀ G)·(bᵀ G)`` for coefficient vectors ``a``, ``b`` over the rows of ``G``."""
    return a @ gramian @ b


def reject(a: torch.Tensor, b: torch.Tensor, gramian: torch.Tensor) -> torch.Tensor:
    """Project ``a`` onto the normal plane of ``b`` (both coefficient vectors).

    Returns ``a − (a·b / ‖b‖²) b``; a ``b`` of zero norm leaves ``a`` unchanged, so this never
    divides by zero.
    """
    bb = dot(b, b, gramian)
    if bb <= 0:
        return a.clone()
    return a - (dot(a, b, gramian) / bb) * b


def project_conflicting(
    gramian: torch.Tensor, orders: torch.Tensor | Sequence[Sequence[int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """PCGrad's sequential projection, in coefficient space.

    For each row ``i``, walk the rows ``j`` of ``orders[i]``; whenever the running ``g_i``
    has a negative dot product with the *original* ``g_j``, remove its component along
    ``g_j`` (a zero ``g_j`` never triggers).

    The ``k`` walks are independent, so step ``t`` of every walk is taken at once (`_walk`):
    ``k − 1`` vectorised steps on the ``k x k`` Gramian. A Gramian on the host runs them in
    NumPy (per-call overhead of microseconds, several times below torch's on small
    arrays); one on a device runs the same steps in torch there, with no host
    synchronisation.

    Args:
        gramian: ``(k, k)`` Gramian of the original rows.
        orders: ``orders[i]`` is the visiting order of the other rows for row ``i``: a
            ``(k, k − 1)`` integer tensor or nested sequences.

    Returns:
        ``(coefficients, projected)``: ``coefficients[i]`` holds the projected ``g_i`` as
        coefficients over the original rows (in the Gramian's dtype and device);
        ``projected[i]`` is True when row ``i`` was projected at least once.
    """
    k = gramian.shape[0]
    if gramian.device.type == "cpu":
        gram = gramian.detach().numpy()
        steps = np.asarray(orders, dtype=np.int64).reshape(k, max(k - 1, 0))
        coefficients = np.eye(k, dtype=gram.dtype)
        projected = np.zeros(k, dtype=bool)
        with np.errstate(all="ignore"):  # a non-finite Gramian: the caller skips the step
            _walk(gram, steps, coefficients, projected, np.arange(k))
        return torch.from_numpy(coefficients), torch.from_numpy(projected)
    device = gramian.device
    order = torch.as_tensor(orders, dtype=torch.long).reshape(k, max(k - 1, 0))
    c = torch.eye(k, dtype=gramian.dtype, device=device)
    hit = torch.zeros(k, dtype=torch.bool, device=device)
    rows = torch.arange(k, device=device)
    _walk(gramian.detach(), to_device(order, device), c, hit, rows)
    return c, hit


def _walk(gram: Any, steps: Any, coefficients: Any, projected: Any, rows: Any) -> None:
    """The vectorised walks, in place, written once for NumPy arrays and torch tensors
    (only operators and indexing both share)."""
    diagonal = gram.diagonal()
    for t in range(steps.shape[1]):
        j = steps[:, t]
        ij = (coefficients * gram[:, j].T).sum(1)  # running g_i · original g_j
        jj = diagonal[j]
        hit = (ij < 0) & (jj > 0)
        # ij·hit / jj, with jj replaced by 1 where it is not positive: never 0·inf.
        coefficients[rows, j] -= (ij * hit) / (jj + (jj <= 0))
        projected |= hit
