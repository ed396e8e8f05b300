"""Seeded randomness for methods: a private ``torch.Generator`` per method, never global state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["SeededGenerator"]


class SeededGenerator:
    """A CPU ``torch.Generator`` that can be reset to its seed and saved in a ``state_dict``.

    Args:
        seed: Seed used at construction and by `reset`.
        generator: Use this generator instead of creating one (its current state becomes
            the reset point).
    """

    def __init__(self, seed: int = 0, generator: torch.Generator | None = None) -> None:
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator is None:
            generator = torch.Generator(device="cpu")
            generator.manual_seed(int(seed))
        self.generator = generator
        self._initial = generator.get_state()

    def reset(self) -> None:
        """Rewind the generator to its initial state."""
        self.generator.set_state(self._initial)

    def permutation(self, n: int) -> list[int]:
        """A random permutation of ``range(n)``."""
        return [int(i) for i in torch.randperm(n, generator=self.generator)]

    def state(self) -> dict[str, Any]:
        """The generator state, for ``state_dict``."""
        return {"generator": self.generator.get_state()}

    def load(self, state: Mapping[str, Any]) -> None:
        """Restore `state`."""
        self.generator.set_state(state["generator"])
