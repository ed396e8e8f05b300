"""Sum and Mean on hand-derived vectors."""

import torch

import gradsurgery as gs


def test_sum_and_mean_vectors() -> None:
    G = torch.tensor([[1.0, -2.0, 0.5], [3.0, 4.0, -0.5]])
    torch.testing.assert_close(gs.Sum()(G), torch.tensor([4.0, 2.0, 0.0]))
    torch.testing.assert_close(gs.Mean()(G), torch.tensor([2.0, 1.0, 0.0]))


def test_sum_reports_no_change_and_the_cosines() -> None:
    method = gs.Sum()
    method(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]), objectives=["a", "b"], diagnostics=True)
    block = method.last_report.blocks["block"]
    assert block.changed is False
    assert bool(block.conflict[0, 1]) and bool(block.conflict[1, 0])
    assert (
        float(block.cosine[0, 1]) == -(2**-0.5) or abs(float(block.cosine[0, 1]) + 2**-0.5) < 1e-7
    )
    info = method.last_report.to_dict()["blocks"]["block"]
    assert info["weights"] == {"a": 1.0, "b": 1.0}
    assert info["conflict"] == {"a|b": True}
