"""Signal helpers: confidences, split linear heads, gradient reversal."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from gradsurgery.signals import (
    GradientReversal,
    grad_reverse,
    modality_confidences,
    split_linear_logits,
    true_class_confidence,
)


def test_true_class_confidence_by_hand() -> None:
    logits = torch.tensor([[0.0, 0.0], [0.0, torch.log(torch.tensor(3.0))]])
    # softmax rows: (½, ½) and (¼, ¾); true classes 0 and 1 → mean(½, ¾) = 0.625.
    value = true_class_confidence(logits, torch.tensor([0, 1]))
    assert float(value) == pytest.approx(0.625)
    assert not value.requires_grad


@given(seed=st.integers(0, 1000), n=st.integers(1, 20))
def test_confidence_is_invariant_to_batch_permutation_and_duplication(seed: int, n: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 4, generator=gen)
    targets = torch.randint(0, 4, (n,), generator=gen)
    base = true_class_confidence(logits, targets)
    perm = torch.randperm(n, generator=gen)
    torch.testing.assert_close(true_class_confidence(logits[perm], targets[perm]), base)
    torch.testing.assert_close(true_class_confidence(logits.repeat(2, 1), targets.repeat(2)), base)


def test_split_linear_logits_add_up_to_the_fused_head() -> None:
    torch.manual_seed(0)
    head = nn.Linear(5, 3)
    feats = {"v": torch.randn(4, 2), "a": torch.randn(4, 3)}
    parts = split_linear_logits(feats, head)
    fused = head(torch.cat([feats["v"], feats["a"]], 1))
    torch.testing.assert_close(parts["v"] + parts["a"] + head.bias, fused.detach())
    split = split_linear_logits(feats, head, bias="split")
    torch.testing.assert_close(split["v"] + split["a"], fused.detach())
    with pytest.raises(ValueError, match="add up to 4, but the head takes 5"):
        split_linear_logits({"v": torch.randn(4, 4)}, head)


def test_modality_confidences_shape() -> None:
    torch.manual_seed(0)
    feats = {"v": torch.randn(6, 2), "a": torch.randn(6, 3)}
    signals = modality_confidences(
        feats,
        classifier=nn.Linear(5, 4),
        targets=torch.randint(0, 4, (6,)),
        discriminator=nn.Linear(5, 2),
        domains=torch.randint(0, 2, (6,)),
    )
    assert set(signals) == {"v", "a"} and set(signals["v"]) == {"cls", "dom"}
    assert all(0 <= float(x) <= 1 for s in signals.values() for x in s.values())
    with pytest.raises(ValueError, match="domains are required"):
        modality_confidences(
            feats,
            classifier=nn.Linear(5, 4),
            targets=torch.zeros(6).long(),
            discriminator=nn.Linear(5, 2),
        )


def test_label_errors() -> None:
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 2\)"):
        true_class_confidence(torch.zeros(2, 2), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="logits must be"):
        true_class_confidence(torch.zeros(2), torch.tensor([0, 1]))


def test_gradient_reversal() -> None:
    x = torch.randn(3, requires_grad=True)
    (grad_reverse(x, 0.3) * 2).sum().backward()
    torch.testing.assert_close(x.grad, torch.full((3,), -0.6))
    layer = GradientReversal(0.5)
    assert "coefficient=0.5" in repr(layer)
    y = torch.randn(3, requires_grad=True)
    torch.testing.assert_close(layer(y), y)
    (layer(y) * 2).sum().backward()
    torch.testing.assert_close(y.grad, torch.full((3,), -1.0))
