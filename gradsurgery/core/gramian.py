"""Gramian-space primitives shared by every method.

Methods never loop over the ``P`` columns of a gradient matrix. They read the ``k x k``
Gramian ``G Gᵀ``, decide one weight per row, and the update is then formed by one pass
over ``G`` (`combine`).
"""

from __future__ import annotations

import torch

__all__ = ["combine", "compute_gramian", "conflicts", "cosines"]

#: Floating dtypes that are accumulated in float32 (half precisions lose too much).
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _working_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def compute_gramian(matrix: torch.Tensor) -> torch.Tensor:
    """Return ``G Gᵀ`` of a ``(k, P)`` matrix as a float64 CPU tensor.

    The product is taken on the matrix's device (in float32 for half precisions) and only
    the ``k x k`` result is moved to the host, where the methods' small decisions run.

    Args:
        matrix: Gradient rows, shape ``(k, P)``.

    Returns:
        The symmetric ``(k, k)`` Gramian in float64 on the CPU.
    """
    if matrix.dim() != 2:
        raise ValueError(f"expected a (k, P) matrix, got shape {tuple(matrix.shape)}")
    work = matrix.to(_working_dtype(matrix.dtype))
    gram = _gram(work).to(device="cpu", dtype=torch.float64)
    return (gram + gram.T) / 2


#: Split long rows into this many column chunks and multiply them as a batch: BLAS
#: parallelises a ``(k, P) x (P, k)`` product poorly over its long inner dimension.
_CHUNKS = 64
_MIN_CHUNKED = 1 << 20


def _gram(work: torch.Tensor) -> torch.Tensor:
    k, p = work.shape
    if p < _MIN_CHUNKED or not work.is_contiguous():
        return work @ work.T
    size = p // _CHUNKS
    head = work[:, : size * _CHUNKS].view(k, _CHUNKS, size).transpose(0, 1)
    gram = torch.bmm(head, head.transpose(1, 2)).sum(0)
    tail = work[:, size * _CHUNKS :]
    return gram + tail @ tail.T if tail.shape[1] else gram


def combine(weights: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """One weighted pass over the rows: ``Σ_i w_i g_i``.

    Args:
        weights: ``(k,)`` row weights (any dtype or device).
        matrix: ``(k, P)`` gradient rows.

    Returns:
        The ``(P,)`` combination, in the matrix's dtype and on its device.
    """
    if weights.shape != (matrix.shape[0],):
        raise ValueError(
            f"expected {matrix.shape[0]} weights for a {tuple(matrix.shape)} matrix, "
            f"got shape {tuple(weights.shape)}"
        )
    work_dtype = _working_dtype(matrix.dtype)
    w = weights.to(device=matrix.device, dtype=work_dtype)
    return (w @ matrix.to(work_dtype)).to(matrix.dtype)


def cosines(gramian: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarities from a Gramian; rows of zero norm give cosine 0."""
    norms = gramian.diagonal().clamp_min(0).sqrt()
    denom = norms[:, None] * norms[None, :]
    safe = torch.where(denom > 0, denom, torch.ones_like(denom))
    return torch.where(denom > 0, gramian / safe, torch.zeros_like(gramian)).clamp(-1, 1)


def conflicts(gramian: torch.Tensor) -> torch.Tensor:
    """Boolean ``(k, k)`` matrix of pairs with a negative dot product (diagonal False)."""
    out = gramian < 0
    out.fill_diagonal_(False)
    return out
