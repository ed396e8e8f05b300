"""Scenarios that every rank of the pool runs (see `dist_pool`); each returns plain data.

The reference in each scenario is the single-process run on the concatenated batch
(``distributed=False`` on the whole batch), computed on every rank from the same seed.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

import gradsurgery as gs
from gradsurgery.accumulate import Accumulator
from gradsurgery.distributed import verify_decisions

#: The global batch of every step.
BATCH = 16


class MultiTask(nn.Module):
    """A shared trunk and one linear head per task (and optionally a parameter no loss uses)."""

    def __init__(self, k: int = 3, unused: bool = False) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 8), nn.Tanh())
        self.heads = nn.ModuleList([nn.Linear(8, 1) for _ in range(k)])
        self.unused = nn.Linear(2, 2) if unused else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.trunk(x)
        return torch.cat([head(h) for head in self.heads], dim=1)


class Multimodal(nn.Module):
    """Two modality encoders, a fused classifier and a discriminator behind a GRL."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.ModuleDict(
            {
                "a": nn.Sequential(nn.Linear(4, 8), nn.Tanh()),
                "v": nn.Sequential(nn.Linear(5, 8), nn.Tanh()),
            }
        )
        self.cls = nn.Linear(16, 3)
        self.disc = nn.Linear(16, 2)
        self.grl = gs.signals.GradientReversal(0.5)

    def forward(
        self, xa: torch.Tensor, xv: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        feats = {"a": self.enc["a"](xa), "v": self.enc["v"](xv)}
        f = torch.cat([feats["a"], feats["v"]], dim=1)
        return feats, self.cls(f), self.disc(self.grl(f))


def batch(step: int, k: int = 3, n: int = BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and k regression targets whose first two tasks pull against each other."""
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(n, 6, generator=g)
    w = torch.randn(6, k, generator=g)
    if k > 1:
        w[:, 1] = -w[:, 0] + 0.3 * w[:, 1]
    y = torch.tanh(x @ w) + 0.1 * torch.randn(n, k, generator=g)
    return x, y


def mm_batch(step: int, n: int = BATCH) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(2000 + step)
    xa, xv = torch.randn(n, 4, generator=g), torch.randn(n, 5, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    d = torch.randint(0, 2, (n,), generator=g)
    return xa, xv, y, d


def mt_losses(out: torch.Tensor, y: torch.Tensor, scale: float = 1.0) -> dict[str, torch.Tensor]:
    return {f"t{i}": (out[:, i] - y[:, i]).pow(2).mean() * scale for i in range(out.shape[1])}


def local_slice(n: int, uneven: bool) -> slice:
    """This rank's rows of a global batch of ``n`` (uneven: 5 and 11 rows for 2 ranks)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    if not uneven:
        per = n // world
        return slice(rank * per, (rank + 1) * per)
    sizes = [5, n - 5] if world == 2 else [n // world] * world
    start = sum(sizes[:rank])
    return slice(start, start + sizes[rank])


def flat(model: nn.Module) -> np.ndarray:
    parts = []
    for p in model.parameters():
        full = p.full_tensor() if hasattr(p, "full_tensor") else p
        parts.append(full.detach().reshape(-1))
    return torch.cat(parts).numpy().copy()


def _wrap(model: nn.Module, wrap: str, **ddp: Any) -> nn.Module:
    if wrap == "ddp":
        return nn.parallel.DistributedDataParallel(model, **ddp)
    return model


def train_multitask(
    method: str | dict[str, Any],
    *,
    wrap: str = "ddp",
    steps: int = 3,
    k: int = 3,
    uneven: bool = False,
    unused: bool = False,
    find_unused_parameters: bool = False,
    static_graph: bool = False,
    distributed: bool | None = None,
    verify: bool = True,
) -> dict[str, Any]:
    torch.manual_seed(0)
    model = MultiTask(k, unused)
    ref = copy.deepcopy(model)
    net = _wrap(
        model,
        wrap,
        find_unused_parameters=find_unused_parameters,
        static_graph=static_graph,
    )
    mine, theirs = gs.build(method), gs.build(method)
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.2)
    changed, notes = [], []
    for step in range(steps):
        x, y = batch(step, k)
        part = local_slice(BATCH, uneven)
        out = net(x[part])
        report = gs.backward(
            mt_losses(out, y[part]),
            {"trunk": model.trunk},
            mine,
            batch_size=x[part].shape[0] if uneven else None,
            distributed=distributed,
        )
        if verify and distributed is not False:
            verify_decisions(report)
        opt.step()
        opt.zero_grad(set_to_none=True)
        changed.append(report.changed)
        notes = report.notes
        gs.backward(mt_losses(ref(x), y), {"trunk": ref.trunk}, theirs, distributed=False)
        opt_ref.step()
        opt_ref.zero_grad(set_to_none=True)
    return {"params": flat(model), "ref": flat(ref), "changed": changed, "notes": notes}


def _mm_losses(
    model: Multimodal, net: nn.Module, part: slice, step: int, scale: float = 1.0
) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]], int]:
    xa, xv, y, d = (t[part] for t in mm_batch(step))
    feats, logits, dlogits = net(xa, xv)
    losses = {
        "cls": nn.functional.cross_entropy(logits, y) * scale,
        "dom": nn.functional.cross_entropy(dlogits, d) * scale,
    }
    signals = gs.signals.modality_confidences(
        feats, classifier=model.cls, targets=y, discriminator=model.disc, domains=d
    )
    return losses, signals, xa.shape[0]


def train_multimodal(
    method: str | dict[str, Any], *, wrap: str = "ddp", steps: int = 3, uneven: bool = False
) -> dict[str, Any]:
    torch.manual_seed(0)
    model = Multimodal()
    ref = copy.deepcopy(model)
    net = _wrap(model, wrap)
    mine, theirs = gs.build(method), gs.build(method)
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.3)
    details = []
    for step in range(steps):
        losses, signals, n = _mm_losses(model, net, local_slice(BATCH, uneven), step)
        report = gs.backward(
            losses, dict(model.enc), mine, signals, batch_size=n if uneven else None
        )
        verify_decisions(report)
        details.append({b: report.blocks[b].details.get("rho") for b in report.blocks})
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses, signals, _ = _mm_losses(ref, ref, slice(0, BATCH), step)
        mine_ref = gs.backward(losses, dict(ref.enc), theirs, signals, distributed=False)
        details[-1]["ref"] = {b: mine_ref.blocks[b].details.get("rho") for b in mine_ref.blocks}
        opt_ref.step()
        opt_ref.zero_grad(set_to_none=True)
    return {"params": flat(model), "ref": flat(ref), "details": details}


def accumulate_multitask(
    method: str | dict[str, Any],
    *,
    wrap: str = "ddp",
    steps: int = 3,
    micro: int = 2,
    k: int = 3,
) -> dict[str, Any]:
    """Each rank splits its half of the batch into ``micro`` micro-batches."""
    torch.manual_seed(0)
    model = MultiTask(k)
    ref = copy.deepcopy(model)
    net = _wrap(model, wrap)
    acc = Accumulator(gs.build(method))
    theirs = gs.build(method)
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.2)
    for step in range(steps):
        x, y = batch(step, k)
        part = local_slice(BATCH, False)
        xs, ys = x[part].chunk(micro), y[part].chunk(micro)
        for xm, ym in zip(xs, ys):
            acc.backward(mt_losses(net(xm), ym, 1.0 / micro), {"trunk": model.trunk})
        report = acc.step()
        verify_decisions(report)
        opt.step()
        opt.zero_grad(set_to_none=True)
        gs.backward(mt_losses(ref(x), y), {"trunk": ref.trunk}, theirs, distributed=False)
        opt_ref.step()
        opt_ref.zero_grad(set_to_none=True)
    return {"params": flat(model), "ref": flat(ref)}


def nonfinite(on_nonfinite: str, wrap: str = "ddp") -> dict[str, Any]:
    """Rank 1's batch holds a NaN: every rank must raise (or skip) together, then train on."""
    torch.manual_seed(0)
    model = MultiTask(2)
    net = _wrap(model, wrap)
    x, y = batch(0, 2)
    part = local_slice(BATCH, False)
    x = x[part].clone()
    if dist.get_rank() == 1:
        x[0, 0] = float("nan")
    result: dict[str, Any] = {}
    try:
        report = gs.backward(
            mt_losses(net(x), y[part]),
            {"trunk": model.trunk},
            gs.PCGrad(),
            on_nonfinite=on_nonfinite,  # type: ignore[arg-type]
        )
        result["outcome"] = "skipped" if report.skipped else "applied"
        result["grad_finite"] = bool(torch.isfinite(model.trunk[0].weight.grad).all())
    except gs.NonFiniteGradientError as error:
        result["outcome"] = "raised"
        result["message"] = str(error)
    model.zero_grad(set_to_none=True)
    x, y = batch(1, 2)
    gs.backward(mt_losses(net(x[part]), y[part]), {"trunk": model.trunk}, gs.PCGrad())
    result["after"] = model.trunk[0].weight.grad.numpy().copy()
    return result


def disagreement(kind: str) -> str:
    """One rank differs (a bad loss, extra signal keys, a batch size given alone)."""
    torch.manual_seed(0)
    model = MultiTask(2)
    x, y = batch(0, 2)
    part = local_slice(BATCH, False)
    losses = mt_losses(model(x[part]), y[part])
    rank = dist.get_rank()
    signals = None
    batch_size = None
    if kind == "bad_loss" and rank == 1:
        losses["t1"] = losses["t1"].detach()
    if kind == "signals":
        signals = {"trunk": {"t0": 0.5}} if rank == 0 else {"trunk": {"t0": 0.5, "t1": 0.2}}
    if kind == "batch_size" and rank == 0:
        batch_size = 8
    try:
        gs.backward(losses, {"trunk": model.trunk}, gs.Sum(), signals, batch_size=batch_size)
    except Exception as error:
        return type(error).__name__
    return "ok"


def seeds(differ: bool) -> str:
    torch.manual_seed(0)
    model = MultiTask(3)
    net = _wrap(model, "ddp")
    method = gs.PCGrad(seed=dist.get_rank() if differ else 7)
    try:
        for step in range(4):
            x, y = batch(step, 3)
            part = local_slice(BATCH, False)
            report = gs.backward(mt_losses(net(x[part]), y[part]), {"trunk": model.trunk}, method)
            verify_decisions(report)
            model.zero_grad(set_to_none=True)
    except Exception as error:
        return type(error).__name__
    return "ok"


def traffic(method: str) -> dict[str, Any]:
    """What one step sends, as the report's note says."""
    torch.manual_seed(0)
    model = MultiTask(3)
    x, y = batch(0, 3)
    part = local_slice(BATCH, False)
    report = gs.backward(
        mt_losses(model(x[part]), y[part]), {"trunk": model.trunk}, gs.build(method)
    )
    trunk = sum(p.numel() for p in model.trunk.parameters())
    heads = sum(p.numel() for p in model.heads.parameters())
    return {"notes": report.notes, "trunk": trunk, "heads": heads}


# -- FSDP2 -------------------------------------------------------------------------------


def train_fsdp(
    method: str | dict[str, Any],
    *,
    steps: int = 3,
    k: int = 3,
    reshard: bool = True,
    accumulate: bool = False,
    blocks_as: str = "module",
) -> dict[str, Any]:
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    model = MultiTask(k)
    ref = copy.deepcopy(model)
    fully_shard(model.trunk, reshard_after_forward=reshard)
    fully_shard(model)
    trunk_params = dict(model.trunk.named_parameters())
    mine, theirs = gs.build(method), gs.build(method)
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.2)
    acc = Accumulator(mine) if accumulate else None
    engines = set()
    for step in range(steps):
        x, y = batch(step, k)
        part = local_slice(BATCH, False)
        blocks = {"trunk": model.trunk if blocks_as == "module" else trunk_params}
        if acc is None:
            report = gs.backward(mt_losses(model(x[part]), y[part]), blocks, mine)
        else:
            for xm, ym in zip(x[part].chunk(2), y[part].chunk(2)):
                acc.backward(mt_losses(model(xm), ym, 0.5), blocks)
            report = acc.step()
        verify_decisions(report)
        engines.add(report.engine)
        opt.step()
        opt.zero_grad(set_to_none=True)
        gs.backward(mt_losses(ref(x), y), {"trunk": ref.trunk}, theirs, distributed=False)
        opt_ref.step()
        opt_ref.zero_grad(set_to_none=True)
    return {"params": flat(model), "ref": flat(ref), "engines": sorted(engines)}


def fsdp_refuses(method: str) -> str:
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    model = MultiTask(1)
    fully_shard(model.trunk)
    fully_shard(model)
    x, y = batch(0, 1)
    part = local_slice(BATCH, False)
    try:
        gs.backward(mt_losses(model(x[part]), y[part]), {"trunk": model.trunk}, gs.build(method))
    except ValueError as error:
        return str(error)
    return "ok"


def fsdp_root_only_warns() -> list[str]:
    """A block whose module is managed by the root's fully_shard only: warned about."""
    import warnings

    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    model = MultiTask(2)
    fully_shard(model)  # the trunk is not sharded on its own
    x, y = batch(0, 2)
    part = local_slice(BATCH, False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # what happens next is not the point: the warning is
        with contextlib.suppress(Exception):
            gs.backward(mt_losses(model(x[part]), y[part]), {"trunk": model.trunk}, gs.Sum())
    return [str(w.message) for w in caught if issubclass(w.category, gs.GradSurgeryWarning)]
