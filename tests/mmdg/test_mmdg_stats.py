"""Paired statistics of the MMDG comparison."""

from __future__ import annotations

import pytest
from mmdg.stats import paired_difference, paired_table
from mmdg.train import RunResult


def _run(config: str, target: str, seed: int, acc: float) -> RunResult:
    return RunResult(config, target, seed, {"fused": 0.5}, {"fused": acc}, 0, [], 1.0)


def test_paired_difference_by_hand() -> None:
    # Differences 0.18, 0.20, 0.22 over three pairs: mean 0.2, sd 0.02, t(0.975, 2) = 4.3027.
    results = [
        *(_run("gmp", t, 0, a) for t, a in (("x", 0.68), ("y", 0.7), ("z", 0.72))),
        *(_run("joint", t, 0, 0.5) for t in ("x", "y", "z")),
        _run("joint", "w", 0, 0.1),  # unpaired: ignored
    ]
    d = paired_difference(results, "gmp", "joint")
    half = 4.302652729911275 * 0.02 / 3**0.5
    assert d.n == 3 and d.mean == pytest.approx(0.2)
    assert (d.low, d.high) == (pytest.approx(0.2 - half), pytest.approx(0.2 + half))
    assert d.resolved
    table = paired_table(results, "gmp")
    assert "| gmp − joint | +0.200 |" in table and "| yes |" in table


def test_unresolved_and_too_few_pairs() -> None:
    results = [_run("a", "x", s, 0.5 + 0.01 * (-1) ** s) for s in range(4)]
    results += [_run("b", "x", s, 0.5) for s in range(4)]
    assert not paired_difference(results, "a", "b").resolved
    with pytest.raises(ValueError, match="share 0"):
        paired_difference(results, "a", "c")


def test_robustness_table_lists_every_condition() -> None:
    from mmdg.compare import robustness_table

    results = [_run("gmp", "x", s, 0.6) for s in range(2)]
    for r in results:
        r.robust.update({"missing:audio": 0.4, "noisy:audio": 0.5})
    table = robustness_table(results)
    assert "| method | clean | missing:audio | noisy:audio |" in table
    assert "| gmp | 0.600 | 0.400 | 0.500 |" in table
    assert robustness_table([_run("joint", "x", 0, 0.5)]) == ""
