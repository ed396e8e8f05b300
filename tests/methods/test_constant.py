"""Constant: the specification's vector, list and by-name weights, and their validation."""

from __future__ import annotations

import pytest
import torch
from helpers import matrices
from hypothesis import given
from hypothesis import strategies as st

import gradsurgery as gs
from gradsurgery.methods.constant import Constant

F1 = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], dtype=torch.float64)


def test_spec_vector() -> None:
    torch.testing.assert_close(Constant(weights=[1, 2])(F1), torch.tensor([8.0, 3.0, 3.0]).double())


@given(G=matrices(max_k=5), data=st.data())
def test_update_is_the_fixed_combination(G: torch.Tensor, data: st.DataObject) -> None:
    k = G.shape[0]
    values = data.draw(st.lists(st.floats(-5, 5), min_size=k, max_size=k))
    method = Constant(weights=values)
    expected = torch.tensor(values, dtype=torch.float64) @ G
    torch.testing.assert_close(method(G), expected, rtol=1e-12, atol=1e-12)
    assert method.last_report is not None
    assert method.last_report.blocks["block"].weights.tolist() == values
    # By name: the same weights follow their objectives in any row order.
    names = [f"t{i}" for i in range(k)]
    by_name = Constant(weights=dict(zip(names, values)))
    perm = data.draw(st.permutations(range(k)))
    out = by_name(G[list(perm)], objectives=[names[i] for i in perm])
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_default_is_sum_and_build_from_config() -> None:
    G = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(Constant()(G), gs.Sum()(G))
    built = gs.build({"method": "constant", "weights": [0.5, 0.25, 2]})
    assert isinstance(built, Constant)
    assert built.hyperparameters() == {"weights": [0.5, 0.25, 2.0], "scope": "block"}
    torch.testing.assert_close(built(G), 0.5 * G[0] + 0.25 * G[1] + 2 * G[2])


def test_length_and_names_must_match_at_apply_time() -> None:
    with pytest.raises(ValueError, match=r"3 weights .* 2 objectives"):
        Constant(weights=[1, 2, 3])(F1)
    with pytest.raises(ValueError, match=r"missing: \['1'\], unknown: \['x'\]"):
        Constant(weights={"0": 1.0, "x": 2.0})(F1)


def test_validation() -> None:
    for bad in ([1, "2"], [True, 1.0], [1.0, float("nan")], "1,2", 3):
        with pytest.raises((TypeError, ValueError), match="weights"):
            Constant(weights=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        Constant(weights=[])
    with pytest.raises(TypeError, match="weights"):
        Constant(weights={1: 1.0})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match=r"weights\[1\] must be a number"):
        gs.build({"method": "constant", "weights": [1.0, "2"]})


def test_state_dict_round_trip() -> None:
    method = Constant(weights=[1.0, 2.0])
    other = Constant(weights=[1.0, 2.0])
    other.load_state_dict(method.state_dict())
    with pytest.raises(ValueError, match="hyper-parameters differ"):
        Constant(weights=[2.0, 1.0]).load_state_dict(method.state_dict())
