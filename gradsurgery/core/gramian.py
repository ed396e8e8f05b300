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
    if not bool(torch.isfinite(gram.diagonal()).all()) and bool(torch.isfinite(matrix).all()):
        # Finite rows whose squared norms overflow the working dtype: rescale, and finish in
        # float64, so that only truly non-finite gradients are reported as such.
        scale = matrix.abs().max().to(torch.float64)
        gram = _gram(matrix.to(torch.float64) / scale).cpu() * scale**2
    return (gram + gram.T) / 2


#: A ``(k, P) x (P, k)`` product with a huge inner dimension is a poor fit for BLAS on both
#: CPU and GPU (measured on an H200: 16 ms at k = 2, P = 256M, where one pass over the rows
#: takes 1.1 ms). Splitting the columns into chunks and multiplying them as one batch brings
#: the Gramian to about one pass. Measured best: up to 64 chunks on CPU, 8192 on GPU.
_MAX_CHUNKS = {"cpu": 64, "gpu": 8192}
_MIN_CHUNK = {"cpu": 16384, "gpu": 1024}


def _gram(work: torch.Tensor) -> torch.Tensor:
    k, p = work.shape
    kind = "cpu" if work.device.type == "cpu" else "gpu"
    chunks = min(_MAX_CHUNKS[kind], p // _MIN_CHUNK[kind])
    if chunks < 2 or not work.is_contiguous():
        return work @ work.T
    size = p // chunks
    head = work[:, : size * chunks].view(k, chunks, size).transpose(0, 1)
    gram = torch.bmm(head, head.transpose(1, 2)).sum(0)
    tail = work[:, size * chunks :]
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
    work = matrix.to(work_dtype)
    if matrix.shape[0] <= 2 and weights.device.type == "cpu":
        # One or two rows: a scale and an axpy move fewer bytes than a GPU gemv does.
        w = [float(x) for x in weights]
        out = work[0] * w[0]
        if len(w) == 2:
            out.add_(work[1], alpha=w[1])
        return out.to(matrix.dtype)
    w_dev = weights.to(device=matrix.device, dtype=work_dtype)
    return (w_dev @ work).to(matrix.dtype)


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
