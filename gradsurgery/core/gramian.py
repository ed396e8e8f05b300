"""Gramian-space primitives shared by every method.

Methods never loop over the ``P`` columns of a gradient matrix. They read the ``k x k``
Gramian ``G Gᵀ``, decide one weight per row, and the update is then formed by one pass
over ``G`` (`combine`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from .errors import NonFiniteGradientError

__all__ = ["ON_DEVICE", "GramianPolicy", "combine", "compute_gramian", "conflicts", "cosines"]

#: Floating dtypes that are accumulated in float32 (half precisions lose too much).
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _working_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in _LOW_PRECISION else dtype


@dataclass(frozen=True)
class GramianPolicy:
    """Where and in which dtype a block's ``k x k`` Gramian is kept.

    The product ``G Gᵀ`` is always taken on the rows' device (in float32 for half
    precisions); the policy says what happens to the small result.

    Attributes:
        device: ``"cpu"`` (default) moves the Gramian to the host, where NumPy/SciPy
            decisions run; ``"native"`` keeps it on the rows' device (no host transfer, for
            decisions written in torch).
        dtype: The Gramian's dtype (default float64, so that decisions on nearly parallel
            rows keep their precision).
        rescale: Whether rows whose squared norms leave the working dtype's range are
            found and rescaled exactly (default; one host check per Gramian). ``False``
            skips the check, so nothing waits for the device: a row whose squared norm
            underflows then counts as zero, and one that overflows gives a non-finite
            Gramian (a step without host synchronisation skips such a step).
    """

    device: Literal["cpu", "native"] = "cpu"
    dtype: torch.dtype = torch.float64
    rescale: bool = True

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "native"):
            raise ValueError(f"GramianPolicy.device must be 'cpu' or 'native', got {self.device!r}")
        if not (isinstance(self.dtype, torch.dtype) and self.dtype.is_floating_point):
            raise ValueError(f"GramianPolicy.dtype must be a floating dtype, got {self.dtype!r}")
        if not isinstance(self.rescale, bool):
            raise ValueError(f"GramianPolicy.rescale must be a bool, got {self.rescale!r}")

    @property
    def synchronizes(self) -> bool:
        """Whether computing a Gramian under this policy waits for the device."""
        return self.device == "cpu" or self.rescale


#: The policy of a step without host synchronisation: the Gramian stays on the rows'
#: device, in float64, and no host check looks for extreme magnitudes.
ON_DEVICE = GramianPolicy(device="native", rescale=False)


def compute_gramian(matrix: torch.Tensor, policy: GramianPolicy | None = None) -> torch.Tensor:
    """Return ``G Gᵀ`` of a ``(k, P)`` matrix, placed as the policy says.

    Rows whose squared norms leave the working dtype's range are handled exactly: rows of
    norm about ``1e-30`` in float32 (whose squares underflow to zero) and finite rows whose
    squares overflow are rescaled by the largest entry and multiplied in float64. A Gramian
    that overflows even float64 raises, so no method decides on an infinite Gramian. A row of
    norm below about ``1e-154`` has a squared norm below float64's range: it counts as a zero
    row for the decision (its entries still enter the update through the weights).

    Args:
        matrix: Gradient rows, shape ``(k, P)``.
        policy: Where and in which dtype to return it (default: float64 on the CPU).

    Returns:
        The symmetric ``(k, k)`` Gramian.

    Raises:
        NonFiniteGradientError: If the rows' squared norms overflow float64.
    """
    policy = policy or GramianPolicy()
    if matrix.dim() != 2:
        raise ValueError(f"expected a (k, P) matrix, got shape {tuple(matrix.shape)}")
    work = matrix.to(_working_dtype(matrix.dtype))
    gram = _gram(work)
    if policy.rescale:
        diag = gram.diagonal()
        info = torch.finfo(work.dtype)
        # Squares below tiny/eps have lost precision (or underflowed to 0); squares at inf
        # have overflowed. Both are rare; only then is the (one-sync) slow path taken.
        suspect = (diag < info.tiny / info.eps) | ~torch.isfinite(diag)
        if bool(suspect.any()):
            gram = _rescaled(matrix, gram, suspect)
    target = matrix.device if policy.device == "native" else torch.device("cpu")
    gram = gram.to(device=target, dtype=policy.dtype)
    return (gram + gram.T) / 2


def _rescaled(matrix: torch.Tensor, gram: torch.Tensor, suspect: torch.Tensor) -> torch.Tensor:
    """The Gramian recomputed in float64 after dividing by the largest entry."""
    rows = matrix[suspect]
    if not bool(torch.isfinite(rows).all()):
        return gram  # truly non-finite entries: reported as such by the caller
    if rows.abs().amax() == 0:
        return gram  # the suspect rows are exactly zero: the Gramian is exact
    # Every row not suspected has a finite squared norm, hence finite entries.
    scale = matrix.abs().amax().to(torch.float64)
    out = _gram(matrix.to(torch.float64) / scale) * scale**2
    if not bool(torch.isfinite(out).all()):
        raise NonFiniteGradientError(
            f"the squared norms of finite gradient rows overflow float64 (largest entry "
            f"{float(scale):.3g}); scale the losses down"
        )
    return out


#: A ``(k, P) x (P, k)`` product with a huge inner dimension is a poor fit for BLAS on both
#: CPU and GPU (measured on an H200: 16 ms at k = 2, P = 256M, where one pass over the rows
#: takes 1.1 ms). Splitting the columns into chunks and multiplying them as one batch brings
#: the Gramian to about one pass. Measured best: up to 64 chunks on CPU, 8192 on GPU.
_MAX_CHUNKS = {"cpu": 64, "gpu": 8192}
_MIN_CHUNK = {"cpu": 16384, "gpu": 1024}


#: On a CPU, up to this many entries (8 MiB of float32) one plain product is faster than the
#: chunks (measured on one thread: 1.2–1.8x faster at k = 2, P ≤ 1M; the chunks win from about
#: 4M entries on, 1.4–3.7x at k = 8).
_CPU_PLAIN_ENTRIES = 2**21


def _gram(work: torch.Tensor) -> torch.Tensor:
    k, p = work.shape
    kind = "cpu" if work.device.type == "cpu" else "gpu"
    if kind == "cpu" and k * p <= _CPU_PLAIN_ENTRIES:
        return work @ work.T
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
        # One or two rows, weights on the host: elementwise ops move fewer bytes than a gemv
        # (on a GPU, and on a CPU too). With a unit weight, two rows are one fused pass.
        w = [float(x) for x in weights]
        if len(w) == 1:
            return (work[0] * w[0]).to(matrix.dtype)
        if not torch.compiler.is_compiling():  # no branch on values a compiler traces
            if w[0] == 1.0:
                return torch.add(work[0], work[1], alpha=w[1]).to(matrix.dtype)
            if w[1] == 1.0:
                return torch.add(work[1], work[0], alpha=w[0]).to(matrix.dtype)
        return (work[0] * w[0]).add_(work[1], alpha=w[1]).to(matrix.dtype)
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
