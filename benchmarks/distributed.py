"""Communication volume and step time of `gradsurgery.backward` under data parallelism.

Runs ``--world`` ranks (default 2, gloo on CPU; nccl when ``--device cuda``) on one machine
and trains a multi-task MLP (shared trunk, ``k`` heads). For each configuration it measures,
in the same run and on the same model:

* the payload this rank hands to collectives per step (bytes passed to ``all_reduce`` /
  ``reduce_scatter_tensor`` / ``all_gather_into_tensor`` and FSDP2's ``*_single`` variants;
  DDP-wrapped models get a comm hook doing DDP's default all-reduce through Python, so it is
  counted too). A ring all-reduce of ``B`` bytes sends about ``2B(n-1)/n`` per rank;
* the median step time (forward, backward, optimizer step), and its ratio to plain DDP
  ``sum(losses).backward()``.

Configurations run round-robin, one step each in turn, so that every configuration sees the
same machine load: plain DDP (the baseline), ``gradsurgery.backward`` with each method on the
DDP-wrapped model, the same on the unwrapped model, the "k backward passes" route (DDP's
reducer averages each objective's full gradient; the rows are then read from ``.grad``),
and FSDP2 (plain backward vs ``gradsurgery.backward``: sharded rows, ``k x k`` Gramians).

Run: ``python benchmarks/distributed.py`` (or ``--steps 30 --width 512``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import gradsurgery as gs

#: Collective → (position, keyword) of the tensor this rank contributes.
_COUNTED = {
    "all_reduce": (0, "tensor"),
    "reduce_scatter_tensor": (1, "input"),
    "all_gather_into_tensor": (1, "input_tensor"),
    "reduce_scatter_single": (1, "input"),  # what FSDP2 calls
    "all_gather_single": (1, "input_tensor"),
}


class Counter:
    """Bytes and calls handed to collectives, by patching torch.distributed's functions."""

    def __init__(self) -> None:
        self.bytes = 0
        self.calls = 0
        self._saved: dict[str, Callable[..., Any]] = {}

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        for name, (position, keyword) in _COUNTED.items():
            original = getattr(dist, name, None)
            if original is None:
                continue
            self._saved[name] = original

            def wrapped(
                *args: Any,
                _f: Callable[..., Any] = original,
                _at: tuple[int, str] = (position, keyword),
                **kwargs: Any,
            ) -> Any:
                tensor = kwargs.get(_at[1], args[_at[0]] if len(args) > _at[0] else None)
                if isinstance(tensor, torch.Tensor):
                    self.bytes += tensor.numel() * tensor.element_size()
                    self.calls += 1
                return _f(*args, **kwargs)

            setattr(dist, name, wrapped)
        try:
            yield
        finally:
            for name, original in self._saved.items():
                setattr(dist, name, original)

    @staticmethod
    def ddp_hook():  # type: ignore[no-untyped-def]
        """A DDP comm hook doing DDP's default all-reduce, but through Python's
        ``dist.all_reduce``, so that `counting` sees it (DDP's own calls are C++)."""
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        def hook(state, bucket):  # type: ignore[no-untyped-def]  # DDP checks annotations
            return default_hooks.allreduce_hook(None, bucket)

        return hook


class Net(nn.Module):
    def __init__(self, width: int, depth: int, k: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(32, width), nn.Tanh()]
        for _ in range(depth - 1):
            layers += [nn.Linear(width, width), nn.Tanh()]
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleList([nn.Linear(width, 1) for _ in range(k)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.trunk(x)
        return torch.cat([head(h) for head in self.heads], dim=1)


def _losses(out: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    return {f"t{i}": (out[:, i] - y[:, i]).pow(2).mean() for i in range(out.shape[1])}


def _k_backward_rows(
    ddp: Any, model: Net, losses: dict[str, torch.Tensor], method: gs.Method
) -> None:
    """The other route: let DDP's reducer average each objective's whole gradient (one
    backward per objective, re-arming the reducer), read the rows, decide, write .grad."""
    params = list(model.trunk.parameters())
    rows = []
    heads: list[torch.Tensor] = []
    for i, loss in enumerate(losses.values()):
        ddp.reducer.prepare_for_backward([])
        ddp.require_backward_grad_sync = True
        loss.backward(retain_graph=i < len(losses) - 1)
        rows.append(torch.cat([p.grad.reshape(-1) for p in params]))
        head_grads = [p.grad.clone() for p in model.heads.parameters()]
        heads = head_grads if not heads else [a + b for a, b in zip(heads, head_grads)]
        model.zero_grad(set_to_none=True)
    update = method(torch.stack(rows))
    offset = 0
    for p in params:
        p.grad = update[offset : offset + p.numel()].view_as(p).clone()
        offset += p.numel()
    for p, g in zip(model.heads.parameters(), heads):
        p.grad = g


def _run(rank: int, world: int, port: int, args: argparse.Namespace, out: Any) -> None:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device, rank if args.device == "cuda" else 0)
    if args.device == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        "nccl" if args.device == "cuda" else "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=300),
    )
    gen = torch.Generator().manual_seed(rank)
    data = [
        (torch.randn(args.batch, 32, generator=gen), torch.randn(args.batch, args.k, generator=gen))
        for _ in range(4)
    ]
    data = [(x.to(device), y.to(device)) for x, y in data]

    def config(method: str | None, wrap: str) -> tuple[Callable[[int], None], Counter]:
        """One configuration's step function and the counter of its collectives."""
        torch.manual_seed(0)
        model = Net(args.width, args.depth, args.k).to(device)
        counter = Counter()
        if wrap == "ddp":
            net: nn.Module = nn.parallel.DistributedDataParallel(model)
            net.register_comm_hook(None, Counter.ddp_hook())
        elif wrap == "fsdp":
            from torch.distributed.fsdp import fully_shard

            fully_shard(model.trunk)
            fully_shard(model)
            net = model
        else:
            net = model
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        if method == "k-backward":
            # One plain step first: DDP rebuilds its buckets from the first backward's order,
            # and k backward passes in that first iteration trip its internal check.
            x, y = data[0]
            sum(_losses(net(x), y).values()).backward()  # type: ignore[union-attr]
            opt.zero_grad(set_to_none=True)
        m = gs.build(method) if method not in (None, "k-backward") else gs.PCGrad()

        def step(i: int) -> None:
            x, y = data[i % len(data)]
            losses = _losses(net(x), y)
            if method is None:
                sum(losses.values()).backward()  # type: ignore[union-attr]
            elif method == "k-backward":
                _k_backward_rows(net, model, losses, m)
            else:
                gs.backward(losses, {"trunk": model.trunk}, m)
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step, counter

    plan: list[tuple[str, str, str | None, str]] = [("loss.backward()", "ddp", None, "ddp")]
    plan += [(m, "ddp", m, "ddp") for m in args.methods]
    plan += [(m, "unwrapped", m, "none") for m in args.methods]
    plan += [("pcgrad (k DDP backward passes)", "ddp", "k-backward", "ddp")]
    if not args.no_fsdp:
        plan += [("loss.backward()", "fsdp2", None, "fsdp")]
        plan += [(m, "fsdp2 (sharded)", m, "fsdp") for m in args.methods]
    configs = []
    for name, mode, method, wrap in plan:
        try:
            step, counter = config(method, wrap)
            for i in range(args.warmup):
                step(i)
        except Exception as error:  # e.g. the private reducer API of the k-backward route
            if rank == 0:
                print(f"{name} ({mode}) not measured: {error}")
            continue
        configs.append((name, mode, step, counter))
    # Round robin: every configuration sees the same machine load.
    times: list[list[float]] = [[] for _ in configs]
    active = Counter()
    for _, _, _, counter in configs:
        counter.bytes = counter.calls = 0
    with active.counting():
        for i in range(args.steps):
            for c, (_, _, step, counter) in enumerate(configs):
                active.bytes = active.calls = 0
                if args.device == "cuda":
                    torch.cuda.synchronize()
                dist.barrier()
                begin = time.perf_counter()
                step(i)
                if args.device == "cuda":
                    torch.cuda.synchronize()
                times[c].append(time.perf_counter() - begin)
                counter.bytes += active.bytes
                counter.calls += active.calls
    rows = [
        {
            "name": name,
            "mode": mode,
            "bytes": counter.bytes / args.steps,
            "calls": counter.calls / args.steps,
            "ms": 1000 * statistics.median(t),
        }
        for (name, mode, _, counter), t in zip(configs, times)
    ]
    if rank == 0:
        out.put(rows)
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64, help="per rank")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--methods", nargs="+", default=["sum", "pcgrad", "cagrad"])
    parser.add_argument("--no-fsdp", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    from socket import socket

    with socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_run, args=(r, args.world, port, args, queue)) for r in range(args.world)
    ]
    for p in procs:
        p.start()
    while True:
        try:
            rows = queue.get(timeout=5)
            break
        except Exception:
            if any(p.exitcode not in (None, 0) for p in procs):
                for p in procs:
                    p.kill()
                raise SystemExit("a rank failed (its traceback is above)") from None
    for p in procs:
        p.join()
    model = Net(args.width, args.depth, args.k)
    trunk = sum(p.numel() for p in model.trunk.parameters())
    total = sum(p.numel() for p in model.parameters())
    print(
        f"{args.world} ranks, {args.device}, trunk P={trunk:,} of {total:,} parameters, "
        f"k={args.k}, batch {args.batch}/rank, median of {args.steps} steps, "
        f"{args.threads} thread(s)/rank"
    )
    base = {r["mode"]: r for r in rows if r["name"] == "loss.backward()"}
    print("| method | model | payload/step | vs DDP | collectives/step | step ms | time vs DDP |")
    print("|---|---|---|---|---|---|---|")
    ddp = base["ddp"]
    for r in rows:
        calls = f"{r['calls']:.0f}"
        print(
            f"| {r['name']} | {r['mode']} | {r['bytes'] / 1024:,.1f} KiB | "
            f"{r['bytes'] / ddp['bytes']:.2f}x | {calls} | {r['ms']:.1f} | "
            f"{r['ms'] / ddp['ms']:.2f}x |"
        )


if __name__ == "__main__":
    main()
