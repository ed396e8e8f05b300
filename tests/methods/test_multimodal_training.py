"""End to end: a tiny two-modality model trained a few SGD steps with each multimodal
balancer through `gradsurgery.backward`, its signals from `gradsurgery.signals`.

Audio carries a strong class cue and video a weak one, so audio dominates; each method's
claim about the two modalities is checked where it makes one.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

import gradsurgery as gs
from gradsurgery.methods.agm import AGM
from gradsurgery.methods.cggm import CGGM
from gradsurgery.methods.mmpareto import MMPareto
from gradsurgery.methods.pmr import PMR
from gradsurgery.signals import (
    cggm_direction_loss,
    class_prototypes,
    modality_accuracies,
    prototype_confidences,
    prototype_logits,
    shapley_scores,
)

MODALITIES = ("audio", "video")
ce = nn.functional.cross_entropy


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.ModuleDict({"audio": nn.Linear(5, 4), "video": nn.Linear(6, 4)})
        self.fuse = nn.Linear(8, 4)
        self.out = nn.Linear(4, 3)
        self.uni = nn.ModuleDict({m: nn.Linear(4, 3) for m in MODALITIES})

    def features(self, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: torch.tanh(self.enc[m](x[m])) for m in MODALITIES}

    def fused(self, z: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.out(torch.relu(self.fuse(torch.cat([z["audio"], z["video"]], 1))))

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fused(self.features(x))


def data(n: int = 96, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=gen)
    audio = torch.randn(n, 5, generator=gen) + 2.5 * nn.functional.one_hot(y, 5).float()
    video = torch.randn(n, 6, generator=gen) + 0.4 * nn.functional.one_hot(y, 6).float()
    return {"audio": audio, "video": video}, y


def blocks(model: Tiny) -> dict[str, object]:
    return {m: model.enc[m].parameters() for m in MODALITIES}


def accuracy(model: Tiny, x: dict[str, torch.Tensor], y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_mmpareto_trains_and_resolves_conflicts_towards_both_losses() -> None:
    torch.manual_seed(0)
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    method = MMPareto(gamma=1.5)
    x, y = data()
    first = None
    conflicts = 0
    for _ in range(40):
        opt.zero_grad(set_to_none=True)
        z = model.features(x)
        losses = {"mm": ce(model.fused(z), y), **{m: ce(model.uni[m](z[m]), y) for m in z}}
        first = first if first is not None else float(losses["mm"].detach())
        table = gs.gradient_table(losses, blocks(model))
        updates, report = method.apply(table)
        for m in MODALITIES:
            rows = table[m].matrix
            if report.blocks[m].details["conflict"]:
                conflicts += 1
                # The fused and the modality's own gradient both descend along the update.
                mine = rows[[table.index("mm"), table.index(m)]] @ updates[m]
                assert bool((mine >= -1e-6 * updates[m].norm() * rows.norm()).all())
        gs.write_grads(table, updates, report)
        opt.step()
    assert finite(model)
    z = model.features(x)
    assert float(ce(model.fused(z), y).detach()) < first
    assert accuracy(model, x, y) > 0.7


def test_mmpareto_heads_get_the_plain_gradient_of_the_summed_losses() -> None:
    torch.manual_seed(1)
    model = Tiny()
    twin = copy.deepcopy(model)
    x, y = data()

    def losses(net: Tiny) -> dict[str, torch.Tensor]:
        z = net.features(x)
        return {"mm": ce(net.fused(z), y), **{m: ce(net.uni[m](z[m]), y) for m in z}}

    gs.backward(losses(model), blocks(model), MMPareto(gamma=1.5))
    sum(losses(twin).values()).backward()
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        if not name.startswith("enc."):
            torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_agm_damps_the_dominant_modality() -> None:
    torch.manual_seed(0)
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    method = AGM(alpha=1.0)
    x, y = data()
    coeffs = {m: [] for m in MODALITIES}
    scores = {m: [] for m in MODALITIES}
    for _ in range(30):
        opt.zero_grad(set_to_none=True)
        logits = model(x)
        signals = shapley_scores(model, x, y, objective="mm", full=logits)
        report = gs.backward({"mm": ce(logits, y)}, blocks(model), method, signals)
        for m in MODALITIES:
            coeffs[m].append(report.blocks[m].weights.item())
            scores[m].append(report.blocks[m].details["score"])
        opt.step()
    assert finite(model)
    assert accuracy(model, x, y) > 0.7
    # Audio is the more confident modality (lower unimodal cross-entropy) and AGM holds it
    # back: its coefficient is below video's, and below 1 on the first step.
    assert sum(scores["audio"]) < sum(scores["video"])
    assert coeffs["audio"][0] < 1 < coeffs["video"][0]
    assert sum(coeffs["audio"]) < sum(coeffs["video"])
    assert method.step == 30


def test_pmr_stimulates_the_weaker_modality() -> None:
    torch.manual_seed(0)
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    method = PMR(alpha=1.0)
    x, y = data()
    protos = None
    stimulated = {m: 0 for m in MODALITIES}
    for epoch in range(3):
        method.set_epoch(epoch)
        with torch.no_grad():  # prototypes at each epoch start, model in eval mode
            model.eval()
            z = model.features(x)
            protos = {
                m: class_prototypes(
                    z[m], y, 3, previous=None if protos is None else protos[m], momentum=0.2
                )
                for m in MODALITIES
            }
            model.train()
        for _ in range(10):
            opt.zero_grad(set_to_none=True)
            z = model.features(x)
            losses = {"mm": ce(model.fused(z), y)}
            losses.update({f"proto_{m}": ce(prototype_logits(z[m], protos[m]), y) for m in z})
            signals = prototype_confidences(z, protos, y)
            report = gs.backward(losses, blocks(model), method, signals)
            for m in report.blocks["audio"].details["weaker"]:
                stimulated[m] += 1
            opt.step()
    assert finite(model)
    assert accuracy(model, x, y) > 0.7
    assert stimulated["video"] > stimulated["audio"]


def test_cggm_pushes_the_modality_that_improves_least() -> None:
    torch.manual_seed(0)
    model = Tiny()
    aux = nn.ModuleDict({m: nn.Linear(4, 3) for m in MODALITIES})
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    aux_opt = torch.optim.SGD(aux.parameters(), lr=0.5)
    method = CGGM()
    x, y = data()
    weights = {m: [] for m in MODALITIES}
    direction = None
    for _ in range(60):
        opt.zero_grad(set_to_none=True)
        z = model.features(x)
        logits = {m: aux[m](z[m].detach()) for m in MODALITIES}
        aux_opt.zero_grad(set_to_none=True)
        sum(ce(v, y) for v in logits.values()).backward()
        aux_opt.step()
        signals = modality_accuracies(logits, y, objective="mm")
        extra = {"direction": 0.05 * direction} if direction is not None else None
        report = gs.backward(
            {"mm": ce(model.fused(z), y)}, blocks(model), method, signals, extra=extra
        )
        b = {m: report.blocks[m].details["B"] for m in MODALITIES}
        for m in MODALITIES:
            weights[m].append(report.blocks[m].weights.item())
        # λ·L_gm of this step's B joins the next step's loss (it reaches the output layer).
        direction = cggm_direction_loss(b, {m: aux[m].weight for m in MODALITIES}, model.out.weight)
        opt.step()
    assert finite(model)
    assert accuracy(model, x, y) > 0.8
    # Audio's classifier improves first and fastest, so over the first steps its encoder gets
    # the smaller weight (later the batch-metric deltas flip B back and forth: spec §6.4).
    for t in range(4):
        assert weights["audio"][t] < weights["video"][t]
    assert all(0.0 <= w <= method.rho for m in MODALITIES for w in weights[m])
