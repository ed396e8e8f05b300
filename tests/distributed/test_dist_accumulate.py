"""Accumulation over micro-batches decides once on the summed rows, locally and across ranks."""

from __future__ import annotations

import numpy as np
import pytest
from dist_pool import Pool

TOL = {"rtol": 1e-5, "atol": 1e-6}


@pytest.mark.parametrize("wrap", ["ddp", "none"])
@pytest.mark.parametrize("method", ["pcgrad", "cagrad"])
def test_two_ranks_two_micro_batches_equal_the_whole_batch(
    pool: Pool, method: str, wrap: str
) -> None:
    results = pool.run("accumulate_multitask", method, wrap=wrap)
    np.testing.assert_array_equal(results[0]["params"], results[1]["params"])
    np.testing.assert_allclose(results[0]["params"], results[0]["ref"], **TOL)
