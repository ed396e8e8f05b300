"""Property-suite cases of the first methods: Sum, Mean, PCGrad, CAGrad, GMP, OGM-GE."""

from __future__ import annotations

from helpers import Case

import gradsurgery as gs

CASES: dict[str, Case] = {
    "sum": Case(gs.Sum),
    "mean": Case(gs.Mean, scale=lambda k: 1.0),
    "pcgrad": Case(gs.PCGrad, seeded=lambda s: gs.PCGrad(seed=s)),
    "cagrad": Case(gs.CAGrad),
    # One modality block: ratios are 1, so GMP is CAGP with the tie rule; the multi-block
    # behaviour has its own tests.
    "gmp": Case(gs.GMP, ks=(1, 2), objectives=lambda k: ["cls", "dom"][:k]),
    # The noise is covered by its own tests; the families check the deterministic part.
    "ogmge": Case(lambda: gs.OGMGE(ge=False), ks=(1,), objectives=lambda k: ["loss"]),
}
