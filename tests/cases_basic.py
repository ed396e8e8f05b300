"""Property-suite cases of the first methods: Sum, Mean, PCGrad, CAGrad, GMP, OGM-GE."""

from __future__ import annotations

from helpers import Case

import gradsurgery as gs


def _cagrad_conditioned(method: gs.Method) -> bool:
    report = method.last_report
    assert report is not None
    return all(float(b.details["lambda"]) <= 1e3 for b in report.blocks.values())


CASES: dict[str, Case] = {
    "sum": Case(gs.Sum),
    "mean": Case(gs.Mean, scale=lambda k: 1.0),
    "pcgrad": Case(gs.PCGrad, seeded=lambda s: gs.PCGrad(seed=s)),
    # CAGrad's update is g_0 + λ·g_w with λ = c‖g_0‖/‖g_w‖: where g_w nearly vanishes, the
    # solver's KKT tolerance (1e-10 of the gradients' scale) is amplified by λ, and two
    # scales of one problem agree only to that. Homogeneity is checked where λ ≤ 1e3.
    "cagrad": Case(gs.CAGrad, conditioned=_cagrad_conditioned),
    # One modality block: ratios are 1, so GMP is CAGP with the tie rule; the multi-block
    # behaviour has its own tests.
    "gmp": Case(gs.GMP, ks=(1, 2), objectives=lambda k: ["cls", "dom"][:k]),
    # The noise is covered by its own tests; the families check the deterministic part.
    "ogmge": Case(lambda: gs.OGMGE(ge=False), ks=(1,), objectives=lambda k: ["loss"]),
}
