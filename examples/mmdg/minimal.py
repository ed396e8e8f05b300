"""The smallest complete GMP training loop: copy it into your own code.

Two modality encoders, a fused linear classifier, a domain discriminator behind a
gradient-reversal layer, and gradsurgery deciding how each encoder's classification and
domain-invariance gradients combine. The method comes from a config mapping, so swapping
GMP for PCGrad or plain joint training is one line. Run from ``examples/``::

    python -m mmdg.minimal --target fr --method gmp

Data: any feature-layout v1 folder with two modalities (default: the shipped AV-Digits-DG).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch
from torch import nn

import gradsurgery as gs
from gradsurgery.signals import GradientReversal, modality_confidences

from .features import load_dg_splits

#: The method by config, exactly as a YAML file would hold it.
CONFIGS = {
    "gmp": {"method": "gmp", "alpha_k": 2.0, "alpha_p": 2.0},
    "joint": {"method": "sum"},
    "pcgrad": {"method": "pcgrad"},
}


def encoder(in_dim: int, feat: int = 64) -> nn.Module:
    """An MLP encoder for one modality's flattened features."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_dim, 128), nn.ReLU(), nn.Linear(128, feat))


def main(argv: Sequence[str] | None = None) -> float:
    parser = argparse.ArgumentParser(prog="python -m mmdg.minimal", description=__doc__)
    parser.add_argument("--data", default="mmdg/data/av-digits-dg")
    parser.add_argument("--target", default="fr", help="held-out domain")
    parser.add_argument("--method", default="gmp", choices=sorted(CONFIGS))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)

    splits = load_dg_splits(args.data, target=args.target)
    train, test = splits.train, splits.test
    mods = list(train.features)[:2]  # one modality pair
    n_classes, n_domains = len(train.classes), len(splits.sources)
    encoders = nn.ModuleDict({m: encoder(train.features[m][0].numel()) for m in mods})
    classifier = nn.Linear(64 * len(mods), n_classes)  # fused head on concatenated features
    discriminator = nn.Linear(64 * len(mods), n_domains)  # domain head behind the GRL
    grl = GradientReversal(0.3)
    params = [*encoders.parameters(), *classifier.parameters(), *discriminator.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    method = gs.build(CONFIGS[args.method])
    blocks = {m: encoders[m] for m in mods}  # one block per modality encoder
    ce = nn.functional.cross_entropy

    for epoch in range(args.epochs):
        order = torch.randperm(len(train))
        for start in range(0, len(train) - 63, 64):
            idx = order[start : start + 64]
            y, d = train.label[idx], train.domain[idx]
            feats = {m: encoders[m](train.features[m][idx]) for m in mods}
            z = torch.cat([feats[m] for m in mods], dim=1)
            losses = {"cls": ce(classifier(z), y), "dom": ce(discriminator(grl(z)), d)}
            signals = modality_confidences(
                feats, classifier=classifier, targets=y, discriminator=discriminator, domains=d
            )
            optimizer.zero_grad(set_to_none=True)
            report = gs.backward(losses, blocks, method, signals)  # instead of loss.backward()
            optimizer.step()
        details = {m: report[m].details for m in mods}
        print(
            f"epoch {epoch}: "
            + ", ".join(
                f"{m} rho={v.get('rho', float('nan')):.2f} k={v.get('k', 1.0):.2f}"
                for m, v in details.items()
            )
        )

    with torch.no_grad():
        z = torch.cat([encoders[m](test.features[m]) for m in mods], dim=1)
        accuracy = float((classifier(z).argmax(1) == test.label).float().mean())
    print(f"held-out {args.target} accuracy ({args.method}): {accuracy:.3f}")
    return accuracy


if __name__ == "__main__":
    main()
