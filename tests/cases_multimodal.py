"""Property-suite cases of the multimodal methods: MMPareto, AGM, PMR, CGGM.

Each runs on one block named ``"block"``. What a method does there:

* MMPareto: the block is one encoder group reached by every row; the full method runs
  (uniform weights without conflict, MGDA with it, the norm restore).
* AGM and CGGM: one modality has nothing to compare with; the weight is 1 (their state,
  the running scores / previous metrics, still advances).
* PMR: objectives ``cls`` plus prototype losses of modalities ``a`` (confidence 0.8) and
  ``b`` (0.6); ``b`` is the weaker one, so its prototype row gets ``α = 1`` and ``a``'s 0.
  With only ``a`` (one modality) no prototype row is used.
"""

from __future__ import annotations

from helpers import Case

from gradsurgery.methods.agm import AGM
from gradsurgery.methods.cggm import CGGM
from gradsurgery.methods.mmpareto import MMPareto
from gradsurgery.methods.pmr import PMR

_PMR_OBJECTIVES = ["cls", "proto_a", "proto_b"]
_PMR_CONFIDENCE = {"a": 0.8, "b": 0.6}


def _pmr_signals(names: list[str]) -> dict:
    return {m: {f"proto_{m}": c} for m, c in _PMR_CONFIDENCE.items() if f"proto_{m}" in names}


CASES: dict[str, Case] = {
    "mmpareto": Case(MMPareto),
    "agm": Case(
        AGM,
        ks=(1,),
        objectives=lambda k: ["cls"],
        signals=lambda names: {"block": {names[0]: 0.7}},
    ),
    "pmr": Case(
        PMR,
        ks=(1, 2, 3),
        objectives=lambda k: _PMR_OBJECTIVES[:k],
        signals=_pmr_signals,
        # Rows: cls (1), proto_a (0: not the weaker modality), proto_b (α = 1: weaker).
        scale=lambda k: {1: 1.0, 2: 1.0, 3: 2.0}[k],
    ),
    "cggm": Case(
        CGGM,
        ks=(1,),
        objectives=lambda k: ["cls"],
        signals=lambda names: {"block": {names[0]: 0.6}},
    ),
}
