"""Projections computed on coefficient vectors in Gramian space.

A vector in the span of the gradient rows is held as its coefficients ``a`` over the rows
(``v = aᵀ G``). Dot products are then ``aᵀ (G Gᵀ) b``, so projecting one combination onto
the normal plane of another costs ``O(k²)`` and never touches the ``P`` columns.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

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
    gramian: torch.Tensor, orders: Sequence[Sequence[int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """PCGrad's sequential projection, in coefficient space.

    For each row ``i``, walk the rows ``j`` of ``orders[i]``; whenever the running ``g_i``
    has a negative dot product with the *original* ``g_j``, remove its component along
    ``g_j``.

    Args:
        gramian: ``(k, k)`` Gramian of the original rows.
        orders: ``orders[i]`` is the visiting order of the other rows for row ``i``.

    Returns:
        ``(coefficients, projected)``: ``coefficients[i]`` holds the projected ``g_i`` as
        coefficients over the original rows; ``projected[i]`` is True when row ``i`` was
        projected at least once.
    """
    # The k x k logic runs in NumPy: per-element torch calls cost microseconds each, which
    # would dominate a GPU step whose gradient pass takes a fraction of a millisecond.
    gram = gramian.detach().cpu().numpy()
    k = gram.shape[0]
    coefficients = np.eye(k)
    projected = np.zeros(k, dtype=bool)
    for i in range(k):
        row = coefficients[i]
        for j in orders[i]:
            ij = float(row @ gram[:, j])
            jj = float(gram[j, j])
            if ij < 0 and jj > 0:
                row[j] -= ij / jj
                projected[i] = True
    return (
        torch.from_numpy(coefficients).to(gramian.dtype),
        torch.from_numpy(projected),
    )
