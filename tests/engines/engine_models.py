"""Small models for the engine tests: a trunk (the block), ``k`` heads and one batch."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

import gradsurgery as gs


class Tied(nn.Module):
    """One ``nn.Linear`` applied twice (weight sharing)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.layer = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(torch.tanh(self.layer(x)))


class Tokens(nn.Module):
    """An embedding followed by a linear layer on every token."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 6)
        self.proj = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.embed(x)).relu()


@dataclass
class Setup:
    """A trunk (the one block), linear heads and a batch."""

    trunk: nn.Module
    heads: nn.ModuleList
    x: torch.Tensor

    def params(self) -> list[torch.Tensor]:
        return [*self.trunk.parameters(), *self.heads.parameters()]

    def forward(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        h = self.trunk(self.x)
        flat = h.reshape(h.shape[0], -1)
        losses = {
            f"t{i}": ((head(flat) - 0.3 * i) ** 2).mean() * (i + 1)
            for i, head in enumerate(self.heads)
        }
        return h, losses

    def clone(self) -> Setup:
        return copy.deepcopy(self)


def mlp(widths: list[int], *, bias: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b, bias=bias), nn.Tanh()]
    return nn.Sequential(*layers)


def _trunks() -> dict[str, Callable[[], tuple[nn.Module, torch.Tensor]]]:
    return {
        "mlp": lambda: (mlp([5, 7, 6, 4]), torch.randn(9, 5)),
        "mlp-no-bias": lambda: (mlp([5, 7, 4], bias=False), torch.randn(9, 5)),
        "conv-bn": lambda: (
            nn.Sequential(
                nn.Conv2d(3, 4, 3),
                nn.BatchNorm2d(4),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(16, 6),
            ),
            torch.randn(5, 3, 6, 6),
        ),
        "layernorm": lambda: (
            nn.Sequential(nn.Linear(5, 8), nn.LayerNorm(8), nn.GELU(), nn.Linear(8, 4)),
            torch.randn(6, 5),
        ),
        "transformer": lambda: (
            nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True),
            torch.randn(3, 5, 8),
        ),
        "transformer-seq-first": lambda: (
            nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, norm_first=True),
            torch.randn(5, 3, 8),
        ),
        "tokens-3d": lambda: (Tokens(), torch.randint(0, 11, (4, 3))),
        "tied": lambda: (Tied(6), torch.randn(4, 6)),
    }


TRUNKS = sorted(_trunks())


def make(name: str, k: int = 3, seed: int = 0, dtype: torch.dtype = torch.float32) -> Setup:
    """The trunk ``name`` with ``k`` heads, in ``dtype``."""
    torch.manual_seed(seed)
    trunk, x = _trunks()[name]()
    with torch.no_grad():
        width = trunk(x).reshape(x.shape[0], -1).shape[1]
    heads = nn.ModuleList(nn.Linear(width, 1) for _ in range(k))
    setup = Setup(trunk, heads, x)
    if dtype != torch.float32:
        setup.trunk.to(dtype)
        setup.heads.to(dtype)
        if setup.x.is_floating_point():
            setup.x = setup.x.to(dtype)
    return setup


def step(
    setup: Setup,
    method: gs.Method,
    engine: object,
    **kwargs: object,
) -> tuple[list[torch.Tensor | None], gs.Report]:
    """One ``gs.backward`` step on fresh gradients: (every parameter's .grad, report).

    ``engine`` may be a callable taking the trunk's output (for the representation engine).
    """
    for p in setup.params():
        p.grad = None
    h, losses = setup.forward()
    chosen = engine(h) if callable(engine) and not hasattr(engine, "build") else engine
    report = gs.backward(losses, {"trunk": setup.trunk}, method, engine=chosen, **kwargs)  # type: ignore[arg-type]
    return [None if p.grad is None else p.grad.clone() for p in setup.params()], report


def assert_grads_close(
    a: list[torch.Tensor | None], b: list[torch.Tensor | None], rtol: float, atol: float
) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x is None) == (y is None)
        if x is not None and y is not None:
            torch.testing.assert_close(x, y, rtol=rtol, atol=atol)
