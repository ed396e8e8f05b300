"""Two gloo ranks: backward averages the tables before deciding, so every rank writes the
same .grad and training equals the single-process run on the concatenated batch."""

from __future__ import annotations

import numpy as np
import pytest
from dist_pool import Pool

TOL = {"rtol": 1e-5, "atol": 1e-6}


def _same_everywhere(results: list[dict]) -> None:
    first = results[0]["params"]
    for other in results[1:]:
        np.testing.assert_array_equal(other["params"], first)


@pytest.mark.parametrize("wrap", ["ddp", "none"])
@pytest.mark.parametrize("method", ["sum", "pcgrad", "cagrad"])
def test_multitask_equals_the_single_process_run_on_the_whole_batch(
    pool: Pool, method: str, wrap: str
) -> None:
    results = pool.run("train_multitask", method, wrap=wrap)
    _same_everywhere(results)
    np.testing.assert_allclose(results[0]["params"], results[0]["ref"], **TOL)
    if method != "sum":
        assert any(results[0]["changed"]), "the surgery never acted: the test could not fail"


def test_uneven_batches_are_weighted_by_their_size(pool: Pool) -> None:
    results = pool.run("train_multitask", "pcgrad", uneven=True)
    _same_everywhere(results)
    np.testing.assert_allclose(results[0]["params"], results[0]["ref"], **TOL)


@pytest.mark.parametrize(
    "options",
    [
        {"unused": True, "find_unused_parameters": False},
        {"unused": True, "find_unused_parameters": True},
        {"static_graph": True},
    ],
    ids=["unused-param", "find-unused", "static-graph"],
)
def test_ddp_reducer_stays_quiet_across_steps(pool: Pool, options: dict) -> None:
    # DDP would raise "Expected to have finished reduction in the prior iteration" on the
    # next forward if its hooks had fired for some parameters only.
    results = pool.run("train_multitask", "pcgrad", steps=4, **options)
    _same_everywhere(results)
    np.testing.assert_allclose(results[0]["params"], results[0]["ref"], **TOL)


@pytest.mark.parametrize("wrap", ["ddp", "none"])
def test_gmp_signals_are_averaged_too(pool: Pool, wrap: str) -> None:
    results = pool.run("train_multimodal", "gmp", wrap=wrap)
    _same_everywhere(results)
    np.testing.assert_allclose(results[0]["params"], results[0]["ref"], **TOL)
    for step in results[0]["details"]:
        for block in ("a", "v"):
            assert step[block] == pytest.approx(step["ref"][block], rel=1e-5)


def test_gmp_with_uneven_batches(pool: Pool) -> None:
    results = pool.run("train_multimodal", "gmp", uneven=True)
    _same_everywhere(results)
    np.testing.assert_allclose(results[0]["params"], results[0]["ref"], **TOL)


def test_opting_out_averages_per_rank_surgeries_instead(pool: Pool) -> None:
    # distributed=False: each rank decides on its own half, then DDP's reducer averages the
    # results: the ranks agree, but the step is not the whole batch's (the bug this fixes).
    results = pool.run("train_multitask", "pcgrad", distributed=False, find_unused_parameters=True)
    _same_everywhere(results)
    gap = np.abs(results[0]["params"] - results[0]["ref"]).max()
    assert gap > 1e-4


def test_opting_out_without_ddp_trains_a_different_model_per_rank(pool: Pool) -> None:
    results = pool.run("train_multitask", "pcgrad", wrap="none", distributed=False)
    assert np.abs(results[0]["params"] - results[1]["params"]).max() > 1e-4


@pytest.mark.parametrize("mode", ["raise", "skip"])
def test_nonfinite_rows_on_one_rank_are_seen_by_every_rank(pool: Pool, mode: str) -> None:
    results = pool.run("nonfinite", mode)
    outcomes = {r["outcome"] for r in results}
    assert outcomes == {"raised" if mode == "raise" else "skipped"}
    if mode == "skip":
        assert not any(r["grad_finite"] for r in results)
    # no hang, and the next step trains normally on both ranks
    np.testing.assert_array_equal(results[0]["after"], results[1]["after"])
    assert np.isfinite(results[0]["after"]).all()


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("bad_loss", {"DistributedError", "ValueError"}),
        ("signals", {"DistributedError"}),
        ("batch_size", {"DistributedError"}),
    ],
)
def test_a_rank_that_differs_fails_every_rank_instead_of_hanging(
    pool: Pool, kind: str, expected: set[str]
) -> None:
    assert set(pool.run("disagreement", kind)) == expected


def test_equal_seeds_give_equal_decisions_and_unequal_seeds_are_caught(pool: Pool) -> None:
    assert pool.run("seeds", False) == ["ok", "ok"]
    assert pool.run("seeds", True) == ["DistributedError", "DistributedError"]


@pytest.mark.parametrize("method", ["sum", "pcgrad"])
def test_one_step_sends_the_rows_once_in_one_bucket(pool: Pool, method: str) -> None:
    results = pool.run("traffic", method)
    note = next(n for n in results[0]["notes"] if n.startswith("distributed"))
    # k rows of the trunk + the heads' plain gradients + a few values, in float32,
    # in one bucketed all-reduce after the 7-integer layout check
    k, trunk, heads = 3, results[0]["trunk"], results[0]["heads"]
    payload = 4 * (k * trunk + heads + 1 + k + 2 * k + 2 * 4) + 7 * 8
    assert "2 all-reduce(s)" in note
    assert f"{payload / 1024:.1f} KiB" in note
