"""Data-parallel multi-task training with gradsurgery, launched by torchrun.

Two regression tasks share a trunk; their targets partly conflict. Every rank trains on
its own shard of each batch; ``gradsurgery.backward`` averages the ranks' gradient tables
before the method decides, so all ranks take the same step, the one a single process would
take on the concatenated batch. The method comes from a config file.

    torchrun --nproc_per_node=2 examples/distributed/train.py \\
        --config examples/distributed/configs/pcgrad.yaml              # CPU: gloo
    torchrun --nproc_per_node=2 examples/distributed/train.py --fsdp   # FSDP2 (fully_shard)
    torchrun --nproc_per_node=2 examples/distributed/train.py --amp    # CUDA: fp16 + GradScaler

On GPUs (one per rank) the backend is nccl, on CPU gloo. Options:

* ``--fsdp``: shard the model with FSDP2 instead of wrapping it in DDP;
* ``--amp``: mixed precision (CUDA: float16 autocast and a GradScaler; CPU: bfloat16
  autocast, no scaler);
* ``accumulate: N`` in the config: ``N`` micro-batches per optimizer step, decided once
  (`gradsurgery.accumulate.Accumulator`);
* ``--save PATH``: write a checkpoint (model, optimizer, the method's state) from rank 0.
"""

from __future__ import annotations

import argparse
import gc
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

import gradsurgery as gs
from gradsurgery.accumulate import Accumulator


class Model(nn.Module):
    """A shared trunk and one linear head per task."""

    def __init__(self, tasks: int = 2) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(10, 64), nn.Tanh(), nn.Linear(64, 32), nn.Tanh())
        self.heads = nn.ModuleList([nn.Linear(32, 1) for _ in range(tasks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.trunk(x)
        return torch.cat([head(h) for head in self.heads], dim=1)


def make_batch(step: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of a step (the same on every rank; each rank takes its shard)."""
    gen = torch.Generator().manual_seed(step)
    x = torch.randn(n, 10, generator=gen)
    shared = torch.sin(x[:, :3].sum(1))
    y1 = shared + 0.5 * x[:, 3] * x[:, 4]
    y2 = shared - 0.5 * x[:, 3] * x[:, 4] + 0.3 * x[:, 5]
    return x, torch.stack([y1, y2], dim=1)


def load_config(path: str | None) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "method": "pcgrad",
        "steps": 200,
        "batch_size": 64,
        "lr": 3e-3,
        "accumulate": 1,
        "clip": 1.0,
    }
    if path:
        text = Path(path).read_text()
        if path.endswith(".toml"):
            import tomllib

            cfg.update(tomllib.loads(text))
        else:
            import yaml

            cfg.update(yaml.safe_load(text))
    return cfg


def train(cfg: dict[str, Any], *, fsdp: bool = False, amp: bool = False) -> dict[str, Any]:
    """Train on an initialized process group; returns the final losses and a checksum."""
    rank, world = dist.get_rank(), dist.get_world_size()
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )
    torch.manual_seed(0)  # the same initial weights everywhere (DDP broadcasts them anyway)
    model = Model().to(device)
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        fully_shard(model.trunk)  # each block's module is sharded itself
        fully_shard(model)
        net: nn.Module = model
    else:
        net = nn.parallel.DistributedDataParallel(model)
    method = gs.build(cfg["method"])  # the same seed on every rank: the same decisions
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    cuda_amp = amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if cuda_amp and not fsdp else None
    autocast_dtype = torch.float16 if cuda_amp else torch.bfloat16
    micro = int(cfg["accumulate"])
    acc = Accumulator(method, on_nonfinite="skip" if scaler else "raise")
    per_rank = cfg["batch_size"]
    losses: dict[str, torch.Tensor] = {}
    for step in range(cfg["steps"]):
        x, y = make_batch(step, per_rank * world)
        x, y = x[rank::world].to(device), y[rank::world].to(device)  # this rank's shard
        for xm, ym in zip(x.chunk(micro), y.chunk(micro)):
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=amp):
                out = net(xm).float()
            losses = {f"task{i}": (out[:, i] - ym[:, i]).pow(2).mean() for i in range(2)}
            scaled = {n: loss / micro for n, loss in losses.items()}
            if scaler is not None:
                scaled = {n: scaler.scale(loss) for n, loss in scaled.items()}
            acc.backward(scaled, {"trunk": model.trunk}, batch_size=xm.shape[0])
        report = acc.step()  # one average across ranks, one decision
        if scaler is not None:
            scaler.unscale_(opt)
        if cfg.get("clip"):
            nn.utils.clip_grad_norm_(model.parameters(), cfg["clip"])
        if scaler is not None:
            scaler.step(opt)  # skipped when the step's gradients are not finite
            scaler.update()
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)
        if rank == 0 and step % 50 == 0:
            values = {n: round(float(v), 4) for n, v in losses.items()}
            print(f"step {step}: {values} changed={report.changed}", flush=True)
    checksum = torch.stack(
        [
            (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().double().sum()
            for p in model.parameters()
        ]
    ).sum()
    every = [torch.zeros_like(checksum) for _ in range(world)]
    dist.all_gather(every, checksum)
    in_sync = all(bool(c == checksum) for c in every)
    return {
        "losses": {n: float(v) for n, v in losses.items()},
        "checksum": float(checksum),
        "in_sync": in_sync,
        "model": model,
        "optimizer": opt,
        "method": method,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=None, help="YAML or TOML file")
    parser.add_argument("--fsdp", action="store_true", help="FSDP2 instead of DDP")
    parser.add_argument("--amp", action="store_true", help="mixed precision")
    parser.add_argument("--steps", type=int, default=None, help="override the config's steps")
    parser.add_argument("--save", default=None, help="checkpoint path (written by rank 0)")
    args = parser.parse_args()
    cfg = load_config(args.config)
    if args.steps is not None:
        cfg["steps"] = args.steps
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        result = train(cfg, fsdp=args.fsdp, amp=args.amp)
        if dist.get_rank() == 0:
            print(f"final losses {result['losses']}; ranks in sync: {result['in_sync']}")
        if args.save and not args.fsdp and dist.get_rank() == 0:
            torch.save(
                {
                    "model": result["model"].state_dict(),
                    "optimizer": result["optimizer"].state_dict(),
                    "method": result["method"].state_dict(),
                },
                args.save,
            )
        # Teardown in order: the model and optimizer (FSDP's communication state) go first,
        # and no rank destroys the group while another still communicates; gloo aborts a
        # process whose worker threads still hold work when the interpreter shuts down.
        del result
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
