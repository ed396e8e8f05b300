"""Blocks as users write them: modules, named parameters, frozen and non-leaf tensors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradsurgery as gs
from gradsurgery.core import make_blocks


def test_module_named_parameters_and_plain_lists_give_the_same_block() -> None:
    trunk = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    from_module = make_blocks({"trunk": trunk})[0]
    from_named = make_blocks({"trunk": trunk.named_parameters()})[0]
    from_dict = make_blocks({"trunk": dict(trunk.named_parameters())})[0]
    from_list = make_blocks({"trunk": list(trunk.parameters())})[0]
    assert from_module.param_names == ("0.weight", "0.bias", "2.weight", "2.bias")
    assert from_named.param_names == from_module.param_names == from_dict.param_names
    assert from_list.param_names == ("#0", "#1", "#2", "#3")
    for block in (from_named, from_dict, from_list):
        assert all(a is b for a, b in zip(block.params, from_module.params))


def test_frozen_parameters_are_skipped_and_reported() -> None:
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    trunk[0].weight.requires_grad_(False)
    head = nn.Linear(2, 1)
    x = torch.randn(5, 3)
    h = trunk(x)
    losses = {"a": head(h).pow(2).mean(), "b": h.sum()}
    report = gs.backward(losses, {"trunk": trunk}, gs.PCGrad())
    assert trunk[0].weight.grad is None
    assert trunk[0].bias.grad is not None
    assert any("frozen" in n and "'0.weight'" in n for n in report.notes)


def test_non_leaf_tensor_is_refused_with_the_reason() -> None:
    w = nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match=r"block 'x'.*parameter '#0'.*not a leaf.*MulBackward"):
        make_blocks({"x": [w * 1.0]})


def test_weight_norm_module_gives_its_leaves() -> None:
    layer = nn.utils.parametrizations.weight_norm(nn.Linear(3, 2))
    block = make_blocks({"layer": layer})[0]
    assert all(p.is_leaf for p in block.params)
    assert "parametrizations.weight.original0" in block.param_names
    with pytest.raises(ValueError, match="not a leaf"):
        make_blocks({"layer": [layer.weight]})


def test_weight_norm_layer_is_trained_through_its_leaves() -> None:
    torch.manual_seed(0)
    layer = nn.utils.parametrizations.weight_norm(nn.Linear(3, 2))
    x = torch.randn(4, 3)
    out = layer(x)
    report = gs.backward({"a": out[:, 0].sum(), "b": -out[:, 1].sum()}, {"l": layer}, gs.Sum())
    assert not report.notes
    leaves = dict(layer.named_parameters())
    out = layer(x)
    expected = torch.autograd.grad(out[:, 0].sum() - out[:, 1].sum(), list(leaves.values()))
    for (name, p), g in zip(leaves.items(), expected):
        torch.testing.assert_close(p.grad, g, msg=name)


def test_complex_parameters_are_refused() -> None:
    z = nn.Parameter(torch.ones(2, dtype=torch.complex64))
    with pytest.raises(ValueError, match="complex.*view_as_real"):
        make_blocks({"z": [z]})


def test_exhausted_generator_says_so() -> None:
    lin = nn.Linear(2, 2)
    params = lin.parameters()
    list(params)
    with pytest.raises(ValueError, match="exhausted iterator.*pass the module"):
        make_blocks({"lin": params})


def test_a_module_block_survives_many_steps() -> None:
    lin = nn.Linear(2, 1)
    blocks = {"lin": lin}  # built once, outside the loop
    for _ in range(3):
        out = lin(torch.ones(1, 2)).sum()
        gs.backward({"a": out, "b": 2 * out}, blocks, gs.Sum())
    torch.testing.assert_close(lin.bias.grad, torch.tensor([9.0]))


def test_wrong_block_types() -> None:
    with pytest.raises(TypeError, match="mapping"):
        make_blocks(nn.Linear(2, 2))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="block 'a': expected an nn.Module"):
        make_blocks({"a": 3})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="not floating point"):
        make_blocks({"a": [torch.zeros(2, dtype=torch.long)]})
