"""What the losses' autograd graph reaches: its leaves, and constructs the engines refuse."""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["reached_leaves"]

#: Backward node of ``torch.utils.checkpoint(..., use_reentrant=True)``.
_REENTRANT_CHECKPOINT = "CheckpointFunctionBackward"


def reached_leaves(losses: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """Every leaf tensor that requires grad and that some loss reaches, in a fixed order.

    Raises:
        ValueError: If the graph passes through reentrant activation checkpointing, which
            hides the checkpointed parameters from ``torch.autograd.grad``.
    """
    found: dict[int, torch.Tensor] = {}
    stack = []
    for loss in losses:
        if loss.grad_fn is None:
            found.setdefault(id(loss), loss)
        else:
            stack.append(loss.grad_fn)
    seen: set[torch.autograd.graph.Node] = set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if type(node).__name__ == _REENTRANT_CHECKPOINT:
            raise ValueError(
                "the losses pass through torch.utils.checkpoint with use_reentrant=True, whose "
                "parameters torch.autograd.grad cannot reach (it re-runs the forward inside "
                "backward); use checkpoint(..., use_reentrant=False), which gradsurgery supports"
            )
        variable = getattr(node, "variable", None)
        if isinstance(variable, torch.Tensor):
            found.setdefault(id(variable), variable)
        stack.extend(child for child, _ in node.next_functions if child is not None)
    return list(found.values())
