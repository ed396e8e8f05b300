"""examples/distributed/train.py on two gloo ranks (its train function, in the pool)."""

from __future__ import annotations

import math

import pytest
from dist_pool import Pool


@pytest.mark.parametrize(
    "options",
    [{}, {"fsdp": True}, {"accumulate": 2}, {"amp": True}],
    ids=["ddp", "fsdp", "accumulate", "bf16-autocast"],
)
def test_example_trains_in_sync(pool: Pool, options: dict) -> None:
    results = pool.run("dist_integrations.example", **options)
    assert all(r["in_sync"] for r in results)
    assert all(math.isfinite(v) for r in results for v in r["losses"].values())
