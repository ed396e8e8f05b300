"""Signal helpers of the multimodal balancers: AGM's Shapley scores, PMR's prototypes,
CGGM's classifier metrics and direction term."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from gradsurgery.signals import (
    batch_accuracy,
    cggm_direction_loss,
    class_prototypes,
    masked_logits,
    modality_accuracies,
    prototype_confidence,
    prototype_confidences,
    prototype_logits,
    shapley_logits,
    shapley_scores,
    unimodal_score,
    unimodal_scores,
)

# -- AGM ------------------------------------------------------------------------------------


def test_unimodal_score_by_hand_and_floor() -> None:
    logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]])
    # −log ½ and −log ¾, averaged.
    want = (math.log(2.0) + math.log(4.0 / 3.0)) / 2
    assert float(unimodal_score(logits, torch.tensor([0, 1]))) == pytest.approx(want)
    # A saturated wrong prediction is floored at −log 1e-8.
    sure = torch.tensor([[0.0, 1000.0]])
    assert float(unimodal_score(sure, torch.tensor([0]))) == pytest.approx(-math.log(1e-8))
    assert float(unimodal_score(sure, torch.tensor([0]), floor=0.5)) == pytest.approx(math.log(2))
    assert not unimodal_score(logits.requires_grad_(), torch.tensor([0, 1])).requires_grad
    with pytest.raises(ValueError, match="targets must lie"):
        unimodal_score(logits, torch.tensor([0, 2]))
    scores = unimodal_scores({"a": logits, "v": logits}, torch.tensor([0, 1]), objective="mm")
    assert set(scores) == {"a", "v"} and set(scores["a"]) == {"mm"}


class Additive(nn.Module):
    """Late fusion by summation: f(x) = Σ_m W_m x_m + b."""

    def __init__(self, widths: dict[str, int], classes: int = 3) -> None:
        super().__init__()
        self.heads = nn.ModuleDict(
            {m: nn.Linear(d, classes, bias=False) for m, d in widths.items()}
        )
        self.bias = nn.Parameter(torch.randn(classes))

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.heads[m](x[m]) for m in self.heads) + self.bias


@pytest.mark.parametrize("widths", [{"a": 2, "v": 3}, {"a": 2, "v": 3, "t": 4}])
def test_shapley_logits_of_an_additive_model_are_its_parts(widths: dict[str, int]) -> None:
    # With f(∅) := 0 and a zero input meaning "absent", every non-empty coalition carries the
    # bias, so the Shapley values are W_m x_m + b / M.
    torch.manual_seed(0)
    model = Additive(widths)
    x = {m: torch.randn(5, d) for m, d in widths.items()}
    out = shapley_logits(model, x)
    for m in widths:
        want = model.heads[m](x[m]) + model.bias / len(widths)
        torch.testing.assert_close(out[m], want.detach())
        assert not out[m].requires_grad


def test_shapley_logits_two_modalities_formula_and_efficiency() -> None:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))

    def forward(x: dict[str, torch.Tensor]) -> torch.Tensor:
        return net(torch.cat([x["a"], x["v"]], 1))

    x = {"a": torch.randn(4, 2), "v": torch.randn(4, 3)}
    out = shapley_logits(forward, x)
    f = {k: masked_logits(forward, x, set(k)).detach() for k in (("a",), ("v",), ("a", "v"))}
    torch.testing.assert_close(out["a"], 0.5 * (f[("a", "v")] - f[("v",)] + f[("a",)]))
    torch.testing.assert_close(out["v"], 0.5 * (f[("a", "v")] - f[("a",)] + f[("v",)]))
    torch.testing.assert_close(out["a"] + out["v"], f[("a", "v")])


@settings(max_examples=20)
@given(seed=st.integers(0, 10_000), count=st.integers(1, 4))
def test_shapley_values_add_up_to_the_full_logits(seed: int, count: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    names = [f"m{i}" for i in range(count)]
    weight = torch.randn(2 * count, 3, generator=gen)

    def forward(x: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.tanh(torch.cat([x[m] for m in names], 1)) @ weight

    x = {m: torch.randn(3, 2, generator=gen) for m in names}
    out = shapley_logits(forward, x)
    torch.testing.assert_close(sum(out.values()), forward(x), rtol=1e-5, atol=1e-5)


class Recorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)
        self.frozen = nn.BatchNorm1d(2)
        self.modes: list[bool] = []

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        self.modes.append(self.training)
        return self.fc(x["a"] + x["v"])


def test_masked_passes_run_in_eval_mode_and_modes_are_restored() -> None:
    model = Recorder()
    model.train()
    model.frozen.eval()  # a submodule the user keeps in eval mode
    x = {"a": torch.randn(3, 2), "v": torch.randn(3, 2)}
    full = model(x)
    model.modes.clear()
    shapley_logits(model, x, full=full)
    assert model.modes == [False, False]  # 2^M − 2 masked passes, in eval mode
    assert model.training and model.fc.training and not model.frozen.training
    model.modes.clear()
    shapley_logits(model, x, eval_mode=False)
    assert model.modes == [True, True, True]


def test_shapley_scores_shape() -> None:
    torch.manual_seed(2)
    model = Additive({"a": 2, "v": 3})
    x = {"a": torch.randn(6, 2), "v": torch.randn(6, 3)}
    y = torch.randint(0, 3, (6,))
    signals = shapley_scores(model, x, y, objective="mm")
    assert set(signals) == {"a", "v"}
    for m in signals:
        value = signals[m]["mm"]
        assert value.shape == () and float(value) >= 0


def test_masked_logits_rejects_unknown_modalities() -> None:
    with pytest.raises(ValueError, match="unknown modalities"):
        masked_logits(lambda x: x["a"], {"a": torch.ones(1, 2)}, {"b"})


# -- PMR ------------------------------------------------------------------------------------

EYE = torch.eye(2)
PHI_A = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
PHI_V = torch.tensor([[0.5, 0.0], [0.0, 0.2]])
LABELS = torch.tensor([0, 1])


def test_spec_vector_prototype_confidences() -> None:
    # Spec §6.3: p^a = (0.8044, 0.8044), p^v = (0.6498, 0.5547).
    probs_a = prototype_logits(PHI_A, EYE).softmax(1).gather(1, LABELS[:, None])[:, 0]
    probs_v = prototype_logits(PHI_V, EYE).softmax(1).gather(1, LABELS[:, None])[:, 0]
    torch.testing.assert_close(probs_a, torch.tensor([0.8044, 0.8044]), atol=1e-4, rtol=0)
    torch.testing.assert_close(probs_v, torch.tensor([0.6498, 0.5547]), atol=1e-4, rtol=0)
    signals = prototype_confidences({"a": PHI_A, "v": PHI_V}, {"a": EYE, "v": EYE}, LABELS)
    assert set(signals["a"]) == {"proto_a"} and set(signals["v"]) == {"proto_v"}
    ratio = float(signals["a"]["proto_a"]) / float(signals["v"]["proto_v"])
    assert ratio == pytest.approx(1.3357, abs=1e-4)
    assert float(prototype_confidence(PHI_A, EYE, LABELS)) == pytest.approx(0.8044, abs=1e-4)


def test_prototype_logits_are_negative_euclidean_distances_differentiable_in_features() -> None:
    feats = torch.tensor([[3.0, 4.0], [1.0, 0.0]], requires_grad=True)
    protos = torch.tensor([[0.0, 0.0], [1.0, 0.0]], requires_grad=True)
    logits = prototype_logits(feats, protos)
    torch.testing.assert_close(logits, -torch.tensor([[5.0, math.sqrt(20.0)], [1.0, 0.0]]))
    logits.sum().backward()
    assert protos.grad is None  # prototypes are constants
    assert feats.grad is not None and torch.isfinite(feats.grad).all()  # even at distance 0


def test_class_prototypes_means_absent_classes_and_momentum() -> None:
    feats = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0]])
    labels = torch.tensor([0, 0, 2])
    first = class_prototypes(feats, labels, 3)
    torch.testing.assert_close(first, torch.tensor([[2.0, 1.0], [0.0, 0.0], [0.0, 5.0]]))
    previous = torch.tensor([[0.0, 0.0], [7.0, 7.0], [10.0, 5.0]])
    second = class_prototypes(feats, labels, 3, previous=previous, momentum=0.2)
    # Present classes: 0.8·new + 0.2·old; the absent class 1 keeps its old prototype.
    torch.testing.assert_close(second, torch.tensor([[1.6, 0.8], [7.0, 7.0], [2.0, 5.0]]))
    assert not class_prototypes(feats.requires_grad_(), labels, 3).requires_grad
    with pytest.raises(ValueError, match="labels must lie"):
        class_prototypes(feats, torch.tensor([0, 0, 3]), 3)
    with pytest.raises(ValueError, match="previous must have shape"):
        class_prototypes(feats, labels, 3, previous=torch.zeros(2, 2))


@settings(max_examples=20)
@given(seed=st.integers(0, 10_000))
def test_class_prototypes_are_class_means(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(12, 3, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 4, (12,), generator=gen)
    protos = class_prototypes(feats, labels, 4)
    for c in range(4):
        mask = labels == c
        want = feats[mask].mean(0) if mask.any() else torch.zeros(3, dtype=torch.float64)
        torch.testing.assert_close(protos[c], want)


def test_prototype_confidences_custom_objective_names() -> None:
    signals = prototype_confidences({"a": PHI_A}, {"a": EYE}, LABELS, objectives={"a": "pce_audio"})
    assert set(signals["a"]) == {"pce_audio"}
    with pytest.raises(ValueError, match="no prototypes"):
        prototype_confidences({"a": PHI_A}, {}, LABELS)


# -- CGGM -----------------------------------------------------------------------------------


def test_batch_accuracy_and_modality_accuracies() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 5.0]])
    y = torch.tensor([0, 0, 0, 1])
    assert float(batch_accuracy(logits, y)) == 0.75
    signals = modality_accuracies({"a": logits, "v": -logits}, y)
    assert float(signals["a"]["cls"]) == 0.75 and float(signals["v"]["cls"]) == 0.25


def test_cggm_direction_loss_by_hand() -> None:
    fused = torch.tensor([[1.0, 0.0], [0.0, 0.0]], requires_grad=True)
    aux = {"a": torch.tensor([[1.0, 0.0], [0.0, 0.0]]), "v": torch.tensor([[0.0, 1.0], [0.0, 0.0]])}
    # cos_a = 1, cos_v = 0: L = (|⅓| + |⅔| − (⅓·1 + ⅔·0)) / 2 = ⅓.
    loss = cggm_direction_loss({"a": 1 / 3, "v": 2 / 3}, aux, fused)
    assert float(loss.detach()) == pytest.approx(1 / 3)
    loss.backward()
    assert fused.grad is not None and torch.isfinite(fused.grad).all()
    # A negative coefficient counts with its absolute value (|B| − B cos ≥ 0 always).
    loss = cggm_direction_loss({"a": -1.0, "v": 0.0}, aux, fused)
    assert float(loss.detach()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same modalities"):
        cggm_direction_loss({"a": 1.0}, aux, fused)
    with pytest.raises(ValueError, match="same shape"):
        cggm_direction_loss({"a": 1.0}, {"a": torch.ones(3)}, fused)
