"""Paired statistics for method comparisons: is a difference resolved or seed noise?

Every method is trained on the same (held-out target, seed) pairs, so differences are paired:
for methods A and B the sample is ``acc_A(t, s) − acc_B(t, s)`` over every pair both ran.
The 95 % interval is Student's t on those differences; a difference is *resolved* when the
interval excludes zero.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

from .train import RunResult

__all__ = ["PairedDifference", "paired_difference", "paired_table"]


@dataclass(frozen=True)
class PairedDifference:
    """``a − b`` over the (target, seed) pairs both methods ran.

    Attributes:
        a: The method read against the others.
        b: The other method.
        mean: Mean paired difference.
        low: Lower end of the 95 % interval.
        high: Upper end of the 95 % interval.
        n: Number of pairs.
    """

    a: str
    b: str
    mean: float
    low: float
    high: float
    n: int

    @property
    def resolved(self) -> bool:
        """Whether the 95 % interval excludes zero."""
        return self.low > 0 or self.high < 0


def paired_difference(
    results: Sequence[RunResult], a: str, b: str, key: str = "fused", level: float = 0.95
) -> PairedDifference:
    """The paired difference of held-out accuracy ``key`` between configs ``a`` and ``b``.

    Raises:
        ValueError: If the two configs share fewer than two (target, seed) pairs.
    """
    acc = {(r.config, r.target, r.seed): r.test[key] for r in results if key in r.test}
    pairs = sorted(
        {(t, s) for (c, t, s) in acc if c == a} & {(t, s) for (c, t, s) in acc if c == b}
    )
    if len(pairs) < 2:
        raise ValueError(f"{a!r} and {b!r} share {len(pairs)} (target, seed) pair(s); need 2")
    diffs = [acc[(a, t, s)] - acc[(b, t, s)] for t, s in pairs]
    mean = statistics.fmean(diffs)
    sem = statistics.stdev(diffs) / math.sqrt(len(diffs))
    half = float(stats.t.ppf(0.5 + level / 2, len(diffs) - 1)) * sem
    return PairedDifference(a, b, mean, mean - half, mean + half, len(diffs))


def paired_table(
    results: Sequence[RunResult],
    reference: str,
    key: str = "fused",
    others: Sequence[str] | None = None,
) -> str:
    """A Markdown table of ``reference − other`` for every other config with shared pairs.

    Args:
        results: The runs.
        reference: The config read against the others.
        key: The accuracy compared (``"fused"`` or a modality).
        others: The configs to compare with (default: every other config, in order).
    """
    if others is None:
        others = [c for c in dict.fromkeys(r.config for r in results) if c != reference]
    lines = [
        f"| {reference} − method | mean | 95 % interval | pairs | resolved |",
        "|---|---|---|---|---|",
    ]
    for other in others:
        try:
            d = paired_difference(results, reference, other, key)
        except ValueError:
            continue
        lines.append(
            f"| {reference} − {other} | {d.mean:+.3f} | [{d.low:+.3f}, {d.high:+.3f}] | "
            f"{d.n} | {'yes' if d.resolved else 'no'} |"
        )
    return "\n".join(lines)
