"""Core data model: blocks, table, signals, registry."""

from __future__ import annotations

import pytest
import torch

import gradsurgery as gs
from gradsurgery.core import make_blocks, require_signal


def params(*shapes: int, dtype: torch.dtype = torch.float32) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.zeros(s, dtype=dtype)) for s in shapes]


class TestBlocks:
    def test_order_and_size(self) -> None:
        a, b = params(3, 4), params(2)
        blocks = make_blocks({"a": a, "b": b})
        assert [x.name for x in blocks] == ["a", "b"]
        assert blocks[0].numel == 7 and blocks[1].numel == 2

    def test_duplicate_inside_a_block_is_kept_once(self) -> None:
        (p,) = params(3)
        assert len(make_blocks({"a": [p, p]})[0].params) == 1

    def test_overlap_names_parameter_and_both_blocks(self) -> None:
        p, q = params(3, 5)
        with pytest.raises(
            ValueError, match=r"'#0' \(shape \(5,\).*block 'b' is also parameter '#1' of block 'a'"
        ):
            make_blocks({"a": [p, q], "b": [q]})

    def test_empty_block_and_empty_mapping(self) -> None:
        with pytest.raises(ValueError, match="block 'a' has no trainable parameters"):
            make_blocks({"a": []})
        with pytest.raises(ValueError, match="blocks is empty"):
            make_blocks({})

    def test_mixed_dtypes_in_a_block(self) -> None:
        p = params(2)[0]
        q = params(2, dtype=torch.float64)[0]
        with pytest.raises(ValueError, match="block 'a' mixes dtypes"):
            make_blocks({"a": [p, q]})

    def test_wrong_types(self) -> None:
        with pytest.raises(TypeError, match="mapping"):
            make_blocks([torch.zeros(1)])  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="entry #0 is a int"):
            make_blocks({"a": [1]})  # type: ignore[list-item]

    def test_block_of_only_frozen_parameters(self) -> None:
        with pytest.raises(ValueError, match=r"'a' has no trainable parameters \(all 1 are frozen"):
            make_blocks({"a": [torch.zeros(2)]})


class TestTable:
    def test_gramian_is_cached_and_float64(self) -> None:
        table = gs.GradientTable.from_matrices({"x": torch.tensor([[1.0, 2.0], [0.0, -1.0]])})
        gram = table["x"].gramian
        assert gram.dtype == torch.float64
        assert table["x"].gramian is gram
        torch.testing.assert_close(
            gram, torch.tensor([[5.0, -2.0], [-2.0, 1.0]], dtype=torch.float64)
        )

    def test_unknown_block_and_objective(self) -> None:
        table = gs.GradientTable.from_matrices({"x": torch.ones(2, 3)}, ["a", "b"])
        with pytest.raises(KeyError, match="unknown block 'y'"):
            table["y"]
        with pytest.raises(KeyError, match="unknown objective 'c'"):
            table.index("c")

    def test_shape_mismatch(self) -> None:
        with pytest.raises(ValueError, match="block 'y'.*expected a \\(1, P\\)"):
            gs.GradientTable.from_matrices({"x": torch.ones(1, 3), "y": torch.ones(2, 3)})

    def test_p_equals_one(self) -> None:
        out = gs.PCGrad()(torch.tensor([[2.0], [-1.0]]))
        torch.testing.assert_close(out, torch.tensor([0.0]))


class TestSignals:
    def test_reads_numbers_and_tensors(self) -> None:
        signals = {"v": {"cls": 0.5, "dom": torch.tensor(0.25)}}
        assert require_signal(signals, "v", "cls", "semantic confidence") == 0.5
        assert require_signal(signals, "v", "dom", "domain confidence") == 0.25

    @pytest.mark.parametrize(
        ("signals", "message"),
        [
            (None, "'semantic confidence' for block 'v', objective 'cls' is missing"),
            ({"a": {}}, "signals has no block 'v'"),
            ({"v": {"dom": 1.0}}, r"signals\['v'\] has \['dom'\] only"),
            ({"v": {"cls": float("nan")}}, "is not finite"),
            ({"v": {"cls": 1.5}}, r"outside \[0.0, 1.0\]"),
            ({"v": {"cls": torch.ones(2)}}, "must be a scalar"),
            ({"v": {"cls": "high"}}, "must be a number"),
        ],
    )
    def test_errors_name_block_objective_and_signal(self, signals, message) -> None:
        with pytest.raises(gs.SignalError, match=message):
            require_signal(signals, "v", "cls", "semantic confidence", low=0.0, high=1.0)


class TestRegistry:
    def test_build_by_name_and_mapping(self) -> None:
        assert isinstance(gs.build("pcgrad"), gs.PCGrad)
        method = gs.build({"method": "cagrad", "c": 0.4})
        assert isinstance(method, gs.CAGrad) and method.c == 0.4
        assert gs.build("PCGrad", seed=3).seed == 3

    def test_unknown_method_lists_the_valid_ones(self) -> None:
        with pytest.raises(KeyError, match=r"unknown method 'adam'.*'cagrad'.*'pcgrad'"):
            gs.build("adam")
        with pytest.raises(KeyError, match="no 'method' key"):
            gs.build({"c": 0.4})

    def test_unknown_hyperparameter_lists_the_valid_ones(self) -> None:
        with pytest.raises(TypeError, match=r"\['alpha'\] for method 'cagrad'; valid: \['c', "):
            gs.build({"method": "cagrad", "alpha": 0.4})

    def test_register_own_method_then_build_it_by_any_spelling(self) -> None:
        class Half(gs.GramianWeighting):
            name = "My-Method"
            uses_gramian = False

            def __init__(self, *, factor: float = 0.5) -> None:
                super().__init__()
                self.factor = factor

            def weigh(self, context):
                return gs.Decision(torch.full((context.k,), self.factor, dtype=torch.float64))

        gs.register(Half)
        try:
            assert "mymethod" in gs.available()
            for spelling in ("My-Method", "my_method", "MYMETHOD"):
                built = gs.build({"method": spelling, "factor": 0.25})
                assert type(built) is Half and built.hyperparameters() == {"factor": 0.25}
            torch.testing.assert_close(built(torch.ones(2, 3)), torch.full((3,), 0.5))
            with pytest.raises(ValueError, match="already registered"):
                gs.register(type("Other", (Half,), {}))
        finally:
            from gradsurgery import registry

            registry._REGISTRY.pop("mymethod")


def test_chunked_gramian_matches_the_plain_product() -> None:
    from gradsurgery.core.gramian import compute_gramian

    G = torch.randn(3, (1 << 20) + 37, generator=torch.Generator().manual_seed(0))
    expected = (G.double() @ G.double().T).to(torch.float64)
    torch.testing.assert_close(compute_gramian(G), expected, rtol=1e-5, atol=1e-2)


def test_huge_but_finite_rows_are_not_reported_as_non_finite() -> None:
    G = torch.full((2, 4), 3e20)  # squared norms overflow float32
    G[1] *= -1
    method = gs.PCGrad()
    out = method(G)
    assert torch.isfinite(out).all()
    assert bool(method.last_report.blocks["block"].conflict[0, 1])
    torch.testing.assert_close(out, torch.zeros(4))
