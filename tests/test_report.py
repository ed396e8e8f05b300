"""Reports: lazy diagnostics and the flat scalar view for loggers."""

from __future__ import annotations

import math

import torch

import gradsurgery as gs


def test_diagnostics_are_computed_only_when_available_or_asked() -> None:
    G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    method = gs.Sum()
    method(G)
    block = method.last_report.blocks["block"]
    assert block.gramian is None and block.cosine is None and block.conflict is None
    method(G, diagnostics=True)
    block = method.last_report.blocks["block"]
    assert block._cosine is None  # not computed until read
    assert math.isclose(float(block.cosine[0, 1]), -(2**-0.5))
    gs.PCGrad()(G)  # a Gramian method's report has them for free


def test_scalars_are_a_flat_float_dict() -> None:
    G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    method = gs.CAGrad()
    method(G, objectives=["seg", "depth"])
    scalars = method.last_report.scalars(prefix="gs/")
    assert all(isinstance(v, float) for v in scalars.values())
    assert scalars["gs/skipped"] == 0.0
    assert scalars["gs/block/changed"] == 1.0
    assert scalars["gs/block/conflict/seg|depth"] == 1.0
    assert math.isclose(scalars["gs/block/cosine/seg|depth"], -(2**-0.5))
    assert {"gs/block/weight/seg", "gs/block/weight/depth", "gs/block/lambda"} <= set(scalars)
    assert "gs/block/w" not in scalars  # lists are not scalars
    plain = gs.Sum()
    plain(G)
    assert set(plain.last_report.scalars(prefix="")) == {
        "skipped",
        "block/weight/0",
        "block/weight/1",
        "block/changed",
    }


def test_gmp_report_scalars_carry_its_quantities() -> None:
    method = gs.GMP()
    table = gs.GradientTable.from_matrices(
        {"v": torch.tensor([[1.0, 0.0], [-1.0, 1.0]]), "a": torch.tensor([[1.0, 1.0], [0.0, 1.0]])},
        ["cls", "dom"],
    )
    _, report = method.apply(table, {"v": {"cls": 0.8, "dom": 0.3}, "a": {"cls": 0.4, "dom": 0.6}})
    scalars = report.scalars()
    for key in ("rho", "sigma", "k", "p", "gamma", "cosine", "conflict"):
        assert f"gs/v/{key}" in scalars
