"""FSDP2 (fully_shard) on two gloo CPU ranks: each rank combines its shard of the rows with
weights decided on the summed shard Gramians."""

from __future__ import annotations

import numpy as np
import pytest
from dist_pool import Pool

TOL = {"rtol": 1e-5, "atol": 1e-6}


@pytest.mark.parametrize("method", ["sum", "pcgrad", "cagrad"])
def test_sharded_step_equals_the_single_process_run(pool: Pool, method: str) -> None:
    results = pool.run("train_fsdp", method)
    assert results[0]["engines"] == ["sharded"]
    np.testing.assert_array_equal(results[0]["params"], results[1]["params"])
    np.testing.assert_allclose(results[0]["params"], results[0]["ref"], **TOL)


@pytest.mark.parametrize(
    "options",
    [{"reshard": False}, {"blocks_as": "params"}, {"accumulate": True}],
    ids=["no-reshard-after-forward", "blocks-as-sharded-params", "accumulate"],
)
def test_sharded_variants(pool: Pool, options: dict) -> None:
    results = pool.run("train_fsdp", "pcgrad", **options)
    np.testing.assert_allclose(results[0]["params"], results[0]["ref"], **TOL)


def test_row_reading_methods_are_refused_under_fsdp(pool: Pool) -> None:
    messages = pool.run("fsdp_refuses", "ogmge")
    assert all("shard" in m and "OGMGE" in m for m in messages), messages


def test_blocks_managed_only_by_the_root_are_warned_about(pool: Pool) -> None:
    messages = pool.run("fsdp_root_only_warns")
    assert all(any("no block parameter is an FSDP shard" in m for m in r) for r in messages)
