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
        if generator.device.type != "cpu":
            raise ValueError(f"generator must be a CPU generator, got one on {generator.device}")
        self.generator = generator
        self._initial = generator.get_state()
        self._device_generators: dict[torch.device, torch.Generator] = {}

    def reset(self) -> None:
        """Rewind the generator to its initial state."""
        self.generator.set_state(self._initial)

    def randn_like(self, tensor: torch.Tensor) -> torch.Tensor:
        """Standard normal noise shaped like ``tensor``, on its device, in float32.

        On the CPU the method's generator draws it directly. On another device a generator of
        that device, re-seeded from the method's generator at every call, draws it there: no
        host-to-device copy, and still one seed fixes every draw (per device type).
        """
        if tensor.device.type == "cpu":
            return torch.randn(tensor.shape, generator=self.generator, dtype=torch.float32)
        if tensor.device.type == "meta":  # shapes only (tracing): there is nothing to draw
            return torch.empty(tensor.shape, dtype=torch.float32, device=tensor.device)
        seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        device_gen = self._device_generators.get(tensor.device)
        if device_gen is None:
            device_gen = torch.Generator(device=tensor.device)
            self._device_generators[tensor.device] = device_gen
        device_gen.manual_seed(seed)
        return torch.randn(
            tensor.shape, generator=device_gen, dtype=torch.float32, device=tensor.device
        )

    def permutation(self, n: int) -> list[int]:
        """A random permutation of ``range(n)``."""
        return [int(i) for i in torch.randperm(n, generator=self.generator)]

    def permutations(self, n: int, count: int) -> torch.Tensor:
        """``count`` random permutations of ``range(n)`` as a ``(count, n)`` CPU tensor: the
        same draws as ``count`` calls of `permutation`, kept a tensor (so a compiled step
        takes them as an input rather than as constants)."""
        return torch.stack([torch.randperm(n, generator=self.generator) for _ in range(count)])

    def state(self) -> dict[str, Any]:
        """The generator state, for ``state_dict``."""
        return {"generator": self.generator.get_state()}

    def load(self, state: Mapping[str, Any]) -> None:
        """Restore `state`."""
        self.generator.set_state(state["generator"])
