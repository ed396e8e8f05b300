"""End-to-end: a two-modality model with a GRL and a domain discriminator trained with GMP."""

from __future__ import annotations

import copy

import torch
from torch import nn

import gradsurgery as gs
from gradsurgery.signals import GradientReversal, modality_confidences


class TwoModal(nn.Module):
    def __init__(self, classes: int = 3, domains: int = 2, reversal: float = 0.1) -> None:
        super().__init__()
        self.enc = nn.ModuleDict({"video": nn.Linear(6, 4), "audio": nn.Linear(5, 4)})
        self.classifier = nn.Linear(8, classes)
        self.grl = GradientReversal(reversal)
        self.discriminator = nn.Linear(8, domains)

    def forward(self, x: dict[str, torch.Tensor], y: torch.Tensor, d: torch.Tensor):
        feats = {m: torch.tanh(self.enc[m](x[m])) for m in ("video", "audio")}
        z = torch.cat([feats["video"], feats["audio"]], 1)
        dom_logits = self.discriminator(self.grl(z))
        losses = {
            "cls": nn.functional.cross_entropy(self.classifier(z), y),
            "dom": nn.functional.cross_entropy(dom_logits, d),
        }
        signals = modality_confidences(
            feats,
            classifier=self.classifier,
            targets=y,
            discriminator=self.discriminator,
            domains=d,
        )
        return losses, signals, dom_logits


def data(n: int = 256, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=gen)
    d = torch.randint(0, 2, (n,), generator=gen)
    video = torch.randn(n, 6, generator=gen) + nn.functional.one_hot(y, 6).float()
    audio = torch.randn(n, 5, generator=gen) + 3.0 * nn.functional.one_hot(d + 2, 5).float()
    audio[:, :3] += 1.5 * nn.functional.one_hot(y, 3).float()
    return {"video": video, "audio": audio}, y, d


def test_heads_and_discriminator_get_autograd_gradients() -> None:
    torch.manual_seed(0)
    model = TwoModal()
    twin = copy.deepcopy(model)
    x, y, d = data()
    losses, signals, _ = model(x, y, d)
    blocks = {m: model.enc[m].parameters() for m in ("video", "audio")}
    report = gs.backward(losses, blocks, gs.GMP(), signals)
    assert set(report.blocks) == {"video", "audio"}
    tl, _, _ = twin(x, y, d)
    (tl["cls"] + tl["dom"]).backward()
    for name in (
        "classifier.weight",
        "classifier.bias",
        "discriminator.weight",
        "discriminator.bias",
    ):
        got = dict(model.named_parameters())[name].grad
        want = dict(twin.named_parameters())[name].grad
        torch.testing.assert_close(got, want, msg=name)
    # The discriminator descends L_d: its gradient is +∇L_d, not the reversed one.
    tl, _, _ = twin(x, y, d)
    direct = torch.autograd.grad(tl["dom"], [twin.discriminator.weight])[0]
    torch.testing.assert_close(model.discriminator.weight.grad, direct)


def test_training_moves_the_right_modality_and_the_discriminator_learns() -> None:
    torch.manual_seed(0)
    model = TwoModal(reversal=0.005)  # a mild reversal leaves domain cues to find
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    method = gs.GMP(alpha_k=0.5, alpha_p=0.5)
    x, y, d = data()
    suppressed = {"video": 0, "audio": 0}
    for _ in range(100):
        opt.zero_grad(set_to_none=True)
        losses, signals, _ = model(x, y, d)
        blocks = {m: model.enc[m].parameters() for m in ("video", "audio")}
        report = gs.backward(losses, blocks, method, signals)
        for m in suppressed:
            suppressed[m] += report.blocks[m].details["k"] < 1
        opt.step()
    # Audio carries the stronger class cue, so its classification gradient is the one damped.
    assert suppressed["audio"] > suppressed["video"]
    xt, yt, dt = data(seed=1)
    with torch.no_grad():
        _, _, dom_logits = model(xt, yt, dt)
        feats = {m: torch.tanh(model.enc[m](xt[m])) for m in ("video", "audio")}
        z = torch.cat([feats["video"], feats["audio"]], 1)
        acc_cls = (model.classifier(z).argmax(1) == yt).float().mean()
        acc_dom = (dom_logits.argmax(1) == dt).float().mean()
    assert acc_cls > 0.6
    assert acc_dom > 0.6  # above the 0.5 chance level: the discriminator is trained
