"""Aligned-MTL: the spec's vectors and its defining property (the aligned rows have equal
singular values)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from gradsurgery.methods.alignedmtl import AlignedMTL

F1 = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], dtype=torch.float64)
F2 = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
F3 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-0.5, -0.5]], dtype=torch.float64)
F4 = torch.tensor([[3.0, 4.0]] * 3, dtype=torch.float64)
F5 = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)


def _run(method: AlignedMTL, G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
    d = method(G)
    block = method.last_report.blocks["block"]  # type: ignore[union-attr]
    return d, block.weights, block.details


def _close(a: torch.Tensor, values: list[float]) -> None:
    torch.testing.assert_close(a, torch.tensor(values, dtype=torch.float64), atol=1e-4, rtol=0)


def test_spec_vectors() -> None:
    d, w, details = _run(AlignedMTL(), F1)
    _close(w, [1.1181, 0.8165])
    _close(d, [0.4266, 1.9347, 1.9347])
    assert details["rank"] == 2
    d, w, _ = _run(AlignedMTL(), F2)
    _close(w, [1.1056, 0.8292])
    _close(d, [0.2764, 0.8292])
    d, w, details = _run(AlignedMTL(), F3)
    _close(w, [0.2722, 0.2722, -0.2722])
    _close(d, [0.4082, 0.4082])
    assert details["rank"] == 2
    d, w, _ = _run(AlignedMTL(), F4)
    torch.testing.assert_close(w, torch.ones(3, dtype=torch.float64))
    d, w, _ = _run(AlignedMTL(), F5)
    torch.testing.assert_close(w, torch.tensor([1.0, 0.0], dtype=torch.float64))
    _, w, _ = _run(AlignedMTL(scale_mode="rmse"), F1)
    _close(w, [3.0217, 2.2066])


def test_median_is_the_lower_middle() -> None:
    # For two eigenvalues torch.median's lower middle is the smaller: "median" = "min".
    torch.testing.assert_close(AlignedMTL(scale_mode="median")(F1), AlignedMTL()(F1))
    G = torch.from_numpy(np.random.default_rng(0).standard_normal((3, 6)))
    lam = torch.linalg.eigvalsh(G @ G.T)
    ratio = float((lam[1] / lam[0]).sqrt())  # median (middle) over min
    torch.testing.assert_close(AlignedMTL(scale_mode="median")(G), ratio * AlignedMTL()(G))


def test_preference_and_torchjd_scale() -> None:
    # TorchJD's default p = 1/k gives 1/k of the library's weights (spec: F1 half of them).
    torch.testing.assert_close(AlignedMTL(preference=[0.5, 0.5])(F1), AlignedMTL()(F1) / 2)
    with pytest.raises(ValueError, match="2 entries but the table has 3"):
        AlignedMTL(preference=[1.0, 1.0])(F3)


def test_zero_gramian_gives_the_preference() -> None:
    _, w, details = _run(AlignedMTL(), torch.zeros(3, 2, dtype=torch.float64))
    torch.testing.assert_close(w, torch.ones(3, dtype=torch.float64))
    assert details["rank"] == 0


@given(k=st.integers(1, 6), extra=st.integers(0, 3), seed=st.integers(0, 2**32 - 1))
def test_aligned_rows_have_equal_singular_values(k: int, extra: int, seed: int) -> None:
    # w = B p: with p = e_i the weights are B's i-th column, so B is read off the method and
    # BG must have its k singular values all equal to √λ_min (condition number 1).
    rng = np.random.default_rng(seed)
    G = torch.from_numpy(rng.standard_normal((k, k + extra)) * 10.0 ** rng.uniform(-2, 2, (k, 1)))
    lam = torch.linalg.eigvalsh(G @ G.T)
    assume(float(lam[0]) > 1e-5 * float(lam[-1]))
    B = torch.stack([_run(AlignedMTL(preference=list(np.eye(k)[i])), G)[1] for i in range(k)])
    singular = torch.linalg.svdvals(B.T @ G)
    torch.testing.assert_close(singular, lam[0].sqrt().expand(k), rtol=1e-7, atol=0)


def test_small_eigenvalues_below_the_rank_threshold_are_dropped() -> None:
    # Rows (1, 0) and (1, 1e-5): λ_min/λ_max ≈ 2.5e-11 < 2 · 2⁻²³: rank 1, as on identical rows.
    G = torch.tensor([[1.0, 0.0], [1.0, 1e-5]], dtype=torch.float64)
    _, w, details = _run(AlignedMTL(), G)
    assert details["rank"] == 1
    torch.testing.assert_close(w, torch.ones(2, dtype=torch.float64), rtol=1e-9, atol=0)
    # A lower threshold keeps it, and the tiny eigenvalue then sets the scale.
    _, w, details = _run(AlignedMTL(rank_rtol=1e-14), G)
    assert details["rank"] == 2
    assert float(w.abs().max()) < 1e-3
