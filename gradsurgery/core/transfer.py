"""Moving small host-made tensors to a device without making the host wait."""

from __future__ import annotations

import torch

__all__ = ["to_device"]


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``; a host-to-GPU copy goes through pinned memory and does not
    block, so a step that must not synchronise can move constants and generator draws.

    Args:
        tensor: A (small) tensor, usually made on the host.
        device: Where it is needed.

    Returns:
        The tensor on ``device`` (the tensor itself when it is there already).
    """
    if tensor.device == device:
        return tensor
    if tensor.device.type == "cpu" and device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
