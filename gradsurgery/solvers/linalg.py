"""Dense linear algebra on ``k x k`` Gramians, shared by the Gramian weightings.

A Gramian arrives as a float64 CPU tensor (or, under another `GramianPolicy`, in another
dtype or on another device); the decisions run in NumPy, in float64, where ``k x k``
operations cost microseconds.

Rank decisions use one relative threshold, `RANK_RTOL`: an eigenvalue ``λ`` of a ``k x k``
PSD matrix counts as zero when ``λ ≤ k · RANK_RTOL · λ_max``. ``RANK_RTOL`` is float32's
machine epsilon, the precision at which the Gramian of float32 (or half-precision)
gradients is accumulated, and the threshold that TorchJD's pseudo-inverses and both
Aligned-MTL references apply on float32 Gramians. Eigenvalues below it are rounding noise
for float32 training, and inverting them would amplify that noise by ``1e7`` or more.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = [
    "RANK_RTOL",
    "ZERO_RATIO",
    "as_gramian_array",
    "cosine_matrix",
    "cosine_rank",
    "kept_eigenpairs",
    "nonzero_rows",
    "pinv_apply",
]

#: Relative eigenvalue threshold (per unit of ``k``) below which a direction counts as null.
RANK_RTOL = float(np.finfo(np.float32).eps)

_EPS64 = float(np.finfo(np.float64).eps)

#: A row shorter than this fraction of the longest row counts as a zero row.
ZERO_RATIO = 1e-100


def as_gramian_array(gramian: Any) -> np.ndarray:
    """A Gramian (tensor or array, any float dtype or device) as a symmetric float64 array."""
    if isinstance(gramian, torch.Tensor):
        K = gramian.detach().to(device="cpu", dtype=torch.float64).numpy()
    else:
        K = np.asarray(gramian, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"expected a square (k, k) Gramian, got shape {K.shape}")
    out: np.ndarray = (K + K.T) / 2
    return out


def nonzero_rows(K: np.ndarray) -> np.ndarray:
    """The rows that count as non-zero: ``‖g_i‖ > ZERO_RATIO · max_j ‖g_j‖``.

    Methods that normalise the rows (ConFIG, the dual-cone projection) give a row of norm
    ``1e-150`` the same say as a row of norm 1, while its squared norm underflows to zero
    once the gradients are scaled by ``1e-12``. A relative threshold far above float64's
    range (rows ``1e100`` times shorter than the longest) makes the decision the same at
    every scale (`gradsurgery.core.gramian.compute_gramian` keeps squared norms exact down
    to about ``1e-300`` of the largest).
    """
    diag = np.diagonal(K)
    top = float(diag.max()) if diag.size else 0.0
    out: np.ndarray = (diag > 0) & (diag > ZERO_RATIO**2 * top)
    return out


def kept_eigenpairs(
    A: np.ndarray, *, rtol: float = RANK_RTOL, rank: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The eigenpairs of a symmetric PSD matrix above the rank threshold, largest first.

    Args:
        A: ``(k, k)`` symmetric matrix.
        rtol: Relative threshold per unit of ``k`` (default `RANK_RTOL`).
        rank: Keep the ``rank`` largest eigenpairs instead of thresholding at ``rtol``;
            of those, only the ones above float64's rounding (``1024 k ε λ_max``, ε
            float64's epsilon) are kept, so that rounding noise never stands in for a
            direction that ``A`` cannot resolve.

    Returns:
        ``(λ, V)``: the ``r`` kept eigenvalues in descending order and the ``(k, r)``
        eigenvectors; ``r = 0`` when ``A`` has no positive eigenvalue.
    """
    k = A.shape[0]
    lam, V = np.linalg.eigh(A)
    top = float(lam[-1]) if k else 0.0
    if top <= 0:
        return np.zeros(0), np.zeros((k, 0))
    keep = lam > k * rtol * top
    if rank is not None:
        keep = (np.arange(k) >= k - rank) & (lam > 1024 * k * _EPS64 * top)
    return lam[keep][::-1].copy(), V[:, keep][:, ::-1].copy()


def pinv_apply(
    A: np.ndarray, b: np.ndarray, *, rtol: float = RANK_RTOL, rank: int | None = None
) -> np.ndarray:
    """``A⁺ b`` for a symmetric PSD ``A``, keeping the eigenpairs `kept_eigenpairs` keeps."""
    lam, V = kept_eigenpairs(A, rtol=rtol, rank=rank)
    out: np.ndarray = V @ ((V.T @ b) / lam)
    return out


def cosine_matrix(K: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows' cosines: ``(C, norms, nonzero)``.

    Returns:
        ``C``, the cosine matrix ``K_ij / (‖g_i‖ ‖g_j‖)`` of the non-zero rows (`nonzero_rows`)
        only; ``norms``, the ``(k,)`` row norms; ``nonzero``, the ``(k,)`` mask of those rows.
    """
    norms: np.ndarray = np.sqrt(np.clip(np.diagonal(K), 0.0, None))
    nonzero = nonzero_rows(K)
    m = norms[nonzero]
    C: np.ndarray = K[np.ix_(nonzero, nonzero)] / (m[:, None] * m[None, :])
    return C, norms, nonzero


def cosine_rank(K: np.ndarray, *, rtol: float = RANK_RTOL) -> int:
    """The rank of a Gramian judged on its rows' directions only.

    The rank threshold is applied to the cosine matrix of the non-zero rows
    (`cosine_matrix`), so a row much shorter than the others still counts as a direction of
    its own; on ``K`` itself its eigenvalue (its squared norm, relatively) would fall below
    the threshold once the norms differ by about ``1e4``.
    """
    C, _, nonzero = cosine_matrix(K)
    if not nonzero.any():
        return 0
    return int(kept_eigenpairs(C, rtol=rtol)[0].shape[0])
