"""A ResNet-18 multi-task step per engine, against a plain step and TorchJD, on any device.

The trunk is a ResNet-18 (basic blocks [2, 2, 2, 2], widths 64–512, batch norm), defined
here because torchvision is not a dependency; ``k`` linear heads read its pooled 512-d
features, each with a squared-error loss. Every configuration of
``benchmarks/engines.py`` runs on it: PCGrad (and MGDA) through the table, gramian and
representation engines, and TorchJD's ``mtl_backward`` and autogram paths when TorchJD is
installed. Each is timed in alternation with the plain ``sum(losses).backward()`` step
(``engines.timeit``, with device synchronisation), and printed as the median ratio.

The exact engines' convolution weights keep their gradient rows (the gramian engine factors
linear layers only), so on this model the gramian engine's memory saving is partial.

Usage:
    python benchmarks/resnet.py [--device cuda] [--ks 2 4 8] [--batch 64] [--size 64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import engines


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a (projected) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def resnet18() -> nn.Sequential:
    """ResNet-18's feature extractor: stem, four stages, global average pooling."""
    layers: list[nn.Module] = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
    ]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


def make_model(k: int, batch: int, size: int, device: torch.device) -> engines.Model:
    """The ResNet-18 trunk with ``k`` heads and one batch, on ``device``."""
    torch.manual_seed(0)
    trunk = resnet18().to(device)
    heads = nn.ModuleList(nn.Linear(512, 1) for _ in range(k)).to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    return engines.Model(trunk, heads, x, torch.randn(batch, k, device=device))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--batch", type=int, default=None, help="default 64 (GPU), 8 (CPU)")
    parser.add_argument("--size", type=int, default=None, help="default 64 (GPU), 32 (CPU)")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (CPU)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    batch = args.batch or (64 if device.type == "cuda" else 8)
    size = args.size or (64 if device.type == "cuda" else 32)
    print(f"ResNet-18 multi-task step on {device}, batch {batch}, {size}x{size} inputs")
    print("ratio to the plain step, measured in alternation in this run; floor (3 + k) / 3")
    rows: dict[str, dict[int, float]] = {}
    plain_ms: dict[int, float] = {}
    for k in args.ks:
        model = make_model(k, batch, size, device)
        configs = engines.steps(model)
        bases = []
        for name, fn in configs.items():
            if name == "plain":
                continue
            base, ratio = engines.timeit(
                configs["plain"], fn, model.zero_grad, args.repeat, device=device
            )
            bases.append(base)
            rows.setdefault(name, {})[k] = ratio
        plain_ms[k] = statistics.median(bases) * 1e3
    print("| configuration | " + " | ".join(f"k = {k}" for k in args.ks) + " |")
    print("|---|" + "---|" * len(args.ks))
    print("| plain step ms | " + " | ".join(f"{plain_ms[k]:.1f}" for k in args.ks) + " |")
    print("| floor (3 + k) / 3 | " + " | ".join(f"{(3 + k) / 3:.2f}" for k in args.ks) + " |")
    for name, by_k in rows.items():
        cells = " | ".join(f"{by_k[k]:.2f}" for k in args.ks)
        print(f"| {name} | {cells} |")


if __name__ == "__main__":
    main()
