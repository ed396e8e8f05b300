"""Step time of GMP on the MMDG example's model against the Sum step, in the same run.

The model, the blocks, the objectives and the signals mirror ``examples/mmdg/train.py`` with
the GMP config (``examples/mmdg/configs/gmp.yaml``): ``MMDGNet`` with an audio (40x48 log-mel)
and a vision (16x16) encoder (hidden 128, feature 64), 10 classes, 3 source domains behind
the gradient-reversal layer, batch 64; the blocks are the two encoders, the objectives ``cls``
(fused + per-modality heads' cross-entropies) and ``dom`` (the discriminator's), the signals
the heads' true-class confidences and the discriminator slices' domain confidences. The
inputs are random tensors of the data set's shapes (the step's cost does not depend on
their values).

Each step is forward + backward. Rows: GMP with the exact engine (``engine="auto"``), GMP
deciding on the encoders' outputs (``features=``, the representation engine), and
``gs.Sum()`` through ``gs.backward``; the ratio is the median over alternating pairs of
(step) / (the Sum step: one plain ``sum(losses).backward()``).

Usage:
    python benchmarks/mmdg_step.py [--repeat 21] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import gradsurgery as gs
from gradsurgery.signals import split_linear_logits, true_class_confidence

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from mmdg.model import MMDGNet
from mmdg.train import objectives

#: Issue targets: GMP step over the Sum step.
EXACT_TARGET = 1.7
FEATURES_TARGET = 1.2

#: The AV-Digits-DG shapes (examples/mmdg/data/av-digits-dg/meta.json).
SHAPES = {"audio": (40, 48), "vision": (16, 16)}


def make_steps(batch: int = 64, seed: int = 0) -> dict[str, Callable[[], None]]:
    """The Sum step and the GMP steps on one model and batch (gradients set to None first)."""
    torch.manual_seed(seed)
    in_dims = {m: h * w for m, (h, w) in SHAPES.items()}
    model = MMDGNet(in_dims, 10, 3, hidden=128, feat=64, reversal=0.3)
    x = {m: torch.randn(batch, *shape) for m, shape in SHAPES.items()}
    y = torch.randint(0, 10, (batch,))
    d = torch.randint(0, 3, (batch,))
    blocks = {m: list(model.encoders[m].parameters()) for m in SHAPES}
    ce = nn.functional.cross_entropy
    gmp = gs.build({"method": "gmp", "alpha_k": 2.0, "alpha_p": 2.0})
    total = gs.Sum()

    def forward() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        out = model(x)
        assert out.domain is not None
        losses = objectives(
            "cls_dom",
            ce(out.fused, y),
            {m: ce(out.unimodal[m], y) for m in SHAPES},
            ce(out.domain, d),
        )
        return losses, out.features

    def signals(features: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        # As train.py's ``signals: heads``: confidences from each modality's own head and
        # from its slice of the discriminator.
        with torch.no_grad():
            out: dict[str, dict[str, torch.Tensor]] = {
                m: {"cls": true_class_confidence(model.heads[m](features[m]), y)} for m in SHAPES
            }
            assert model.discriminator is not None
            for m, v in split_linear_logits(features, model.discriminator).items():
                out[m]["dom"] = true_class_confidence(v, d)
        return out

    def zero() -> None:
        model.zero_grad(set_to_none=True)

    def plain() -> None:
        zero()
        losses, _ = forward()
        torch.stack(list(losses.values())).sum().backward()

    def gs_sum() -> None:
        zero()
        losses, _ = forward()
        gs.backward(losses, blocks, total)

    def gmp_exact() -> None:
        zero()
        losses, feats = forward()
        gs.backward(losses, blocks, gmp, signals(feats))

    def gmp_features() -> None:
        zero()
        losses, feats = forward()
        gs.backward(losses, blocks, gmp, signals(feats), engine="representation", features=feats)

    return {
        "sum (plain backward)": plain,
        "gs.Sum": gs_sum,
        "gmp exact": gmp_exact,
        "gmp features=": gmp_features,
    }


def ratios(repeat: int) -> tuple[float, dict[str, float]]:
    """``(Sum step ms, {configuration: median of per-pair ratios over the Sum step})``."""
    steps = make_steps()
    base = steps["sum (plain backward)"]
    out: dict[str, float] = {}
    base_times = []
    for name, fn in steps.items():
        if fn is base:
            continue
        for f in (base, fn):
            f()
        pairs = []
        for _ in range(repeat):
            t = []
            for f in (base, fn):
                start = time.perf_counter()
                f()
                t.append(time.perf_counter() - start)
            base_times.append(t[0])
            pairs.append(t[1] / t[0])
        out[name] = statistics.median(pairs)
    return statistics.median(base_times) * 1e3, out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=21)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    base, result = ratios(args.repeat)
    print(
        f"MMDG model (AV-Digits-DG shapes, batch 64), {args.threads} thread(s), median of "
        f"{args.repeat} pairs; Sum step (plain backward) {base:.2f} ms"
    )
    for name, r in result.items():
        print(f"  {name:<16} {r:5.2f}x")
    exact, feats = result["gmp exact"], result["gmp features="]
    print(
        f"  target: GMP exact <= {EXACT_TARGET}x Sum: "
        f"{'met' if exact <= EXACT_TARGET else 'missed'}"
    )
    print(
        f"  target: GMP features= <= {FEATURES_TARGET}x Sum: "
        f"{'met' if feats <= FEATURES_TARGET else 'missed'}"
    )


if __name__ == "__main__":
    main()
