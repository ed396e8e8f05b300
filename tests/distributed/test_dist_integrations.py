"""The Lightning and Accelerate recipes of docs/integrations.md on two gloo ranks.

Skipped, with the reason, when ``pytorch-lightning`` or ``accelerate`` is not installed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from dist_pool import Pool

TOL = {"rtol": 1e-5, "atol": 1e-6}


def _need(module: str, package: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{package} is not installed (pip install {package}); recipe not checked")


@pytest.mark.parametrize("method", ["pcgrad", "cagrad"])
def test_lightning_manual_optimization_with_ddp_strategy(
    pool: Pool, method: str, tmp_path: Path
) -> None:
    _need("pytorch_lightning", "pytorch-lightning")
    results = pool.run("dist_integrations.lightning_ddp", method, str(tmp_path), timeout=240)
    np.testing.assert_array_equal(results[0]["params"], results[1]["params"])
    np.testing.assert_allclose(results[0]["params"], results[0]["ref"], **TOL)
    assert all(r["state_restored"] for r in results)


@pytest.mark.parametrize("accumulate", [False, True], ids=["step", "accumulate"])
def test_accelerate_instead_of_accelerator_backward(pool: Pool, accumulate: bool) -> None:
    _need("accelerate", "accelerate")
    results = pool.run("dist_integrations.accelerate_ddp", "pcgrad", accumulate, timeout=240)
    assert results[0]["type"] == "DistributedType.MULTI_CPU"
    np.testing.assert_array_equal(results[0]["params"], results[1]["params"])
    np.testing.assert_allclose(results[0]["params"], results[0]["ref"], **TOL)
