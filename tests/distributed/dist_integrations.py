"""Lightning and Accelerate scenarios, run on every rank of the pool (launched externally,
as torchrun would: the frameworks find the initialized process group and spawn nothing).

Each is the recipe of docs/integrations.md, checked against the single-process run on the
concatenated batch.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch
import torch.distributed as dist
from dist_scenarios import BATCH, MultiTask, batch, flat, mt_losses
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import gradsurgery as gs
from gradsurgery.accumulate import Accumulator

STEPS = 3
LR = 0.2
CLIP = 0.5


def _dataset(k: int = 3) -> TensorDataset:
    xs, ys = zip(*(batch(step, k) for step in range(STEPS)))
    return TensorDataset(torch.cat(xs), torch.cat(ys))


def _reference(model: nn.Module, method: str, k: int = 3, clip: float | None = CLIP) -> Any:
    """The single-process run: each step on the 16 samples both ranks saw together."""
    ref = copy.deepcopy(model)
    theirs = gs.build(method)
    opt = torch.optim.SGD(ref.parameters(), lr=LR)
    for step in range(STEPS):
        x, y = batch(step, k)
        gs.backward(mt_losses(ref(x), y), {"trunk": ref.trunk}, theirs, distributed=False)
        if clip is not None:
            nn.utils.clip_grad_norm_(ref.parameters(), clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return flat(ref), theirs.state_dict()


def lightning_ddp(method: str, tmp: str) -> dict[str, Any]:
    import pytorch_lightning as pl

    class Task(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False  # gradsurgery.backward replaces backward
            self.net = MultiTask(3)
            self.method = gs.build(method)

        def training_step(self, batch_: Any, batch_idx: int) -> None:
            x, y = batch_
            opt = self.optimizers()
            losses = mt_losses(self.net(x), y)
            scaler = getattr(self.trainer.precision_plugin, "scaler", None)
            if scaler is not None:  # precision="16-mixed": scale as manual_backward would
                losses = {name: scaler.scale(loss) for name, loss in losses.items()}
                scaler.unscale_(opt.optimizer)
            report = gs.backward(losses, {"trunk": self.net.trunk}, self.method)
            self.clip_gradients(opt, gradient_clip_val=CLIP, gradient_clip_algorithm="norm")
            opt.step()
            opt.zero_grad(set_to_none=True)
            self.log_dict(report.scalars(), on_step=True)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=LR)

        def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
            checkpoint["gradsurgery"] = self.method.state_dict()

        def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
            self.method.load_state_dict(checkpoint["gradsurgery"])

    torch.manual_seed(0)
    task = Task()
    start = copy.deepcopy(task.net)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=dist.get_world_size(),
        strategy="ddp",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp,
        use_distributed_sampler=False,  # our own sampler: unshuffled, to compare runs
    )
    data = _dataset()
    loader = DataLoader(
        data,
        batch_size=BATCH // dist.get_world_size(),
        sampler=DistributedSampler(data, shuffle=False),
    )
    trainer.fit(task, loader)
    path = os.path.join(tmp, "last.ckpt")
    trainer.save_checkpoint(path)
    restored = Task.load_from_checkpoint(path)  # on_load_checkpoint restores the method
    ref, ref_state = _reference(start, method)
    same_state = all(
        torch.equal(torch.as_tensor(a), torch.as_tensor(b))
        for a, b in zip(restored.method.state_dict()["state"].values(), ref_state["state"].values())
    )
    return {
        "params": flat(task.net),
        "ref": ref,
        "state_restored": same_state,
    }


def accelerate_ddp(method: str, accumulate: bool = False) -> dict[str, Any]:
    from accelerate import Accelerator

    micro = 2 if accumulate else 1
    # Accelerate reads the launcher's environment (Lightning's teardown may have removed it).
    os.environ["WORLD_SIZE"] = str(dist.get_world_size())
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=micro)
    torch.manual_seed(0)
    model = MultiTask(3)
    start = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    per_rank = BATCH // dist.get_world_size() // micro
    loader = DataLoader(_dataset(), batch_size=per_rank, shuffle=False)
    model, opt, loader = accelerator.prepare(model, opt, loader)
    inner = accelerator.unwrap_model(model)
    acc = Accumulator(gs.build(method))
    for x, y in loader:
        with accelerator.accumulate(model):
            losses = mt_losses(model(x), y, 1.0 / micro)
            if accelerator.scaler is not None:  # mixed_precision="fp16"
                losses = {name: accelerator.scaler.scale(v) for name, v in losses.items()}
            # instead of accelerator.backward(loss):
            acc.backward(losses, {"trunk": inner.trunk})
            if accelerator.sync_gradients:
                acc.step()
                accelerator.clip_grad_norm_(model.parameters(), CLIP)
            opt.step()  # a no-op until the last micro-batch of the step
            opt.zero_grad(set_to_none=True)
    ref, _ = _reference(start, method)
    return {"params": flat(inner), "ref": ref, "type": str(accelerator.distributed_type)}


def example(fsdp: bool = False, accumulate: int = 1, amp: bool = False) -> dict[str, Any]:
    """examples/distributed/train.py's training function, a few steps."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "distributed" / "train.py"
    spec = importlib.util.spec_from_file_location("distributed_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = module.load_config(str(path.parent / "configs" / "pcgrad.yaml"))
    cfg.update(steps=6, accumulate=accumulate, batch_size=16)
    result = module.train(cfg, fsdp=fsdp, amp=amp)
    return {"in_sync": result["in_sync"], "losses": result["losses"]}
