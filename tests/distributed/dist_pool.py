"""A pool of ranks for the distributed tests: spawned once, joined by a gloo process group
on a free loopback port, then asked to run scenarios by name (``"fn"`` for a function of
`dist_scenarios`, ``"module.fn"`` for another module). A scenario's return value comes
back per rank; an exception on any rank fails the test with that rank's traceback, and the
pool is restarted for the next test."""

from __future__ import annotations

import contextlib
import datetime
import os
import queue
import socket
import traceback
from typing import Any

import torch.multiprocessing as mp

#: How long a rank may wait in a collective before gloo gives up (a hung test fails fast).
COLLECTIVE_TIMEOUT_S = 30


def free_port() -> int:
    """A TCP port that was free on the loopback interface a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(rank: int, world: int, port: int, inbox: Any, outbox: Any) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        NODE_RANK="0",
    )
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S),
    )
    import importlib

    while True:
        task = inbox.get()
        if task is None:
            break
        name, args, kwargs = task
        try:
            module, _, function = name.rpartition(".")
            value = getattr(importlib.import_module(module or "dist_scenarios"), function)(
                *args, **kwargs
            )
            outbox.put((rank, True, value))
        except BaseException:
            outbox.put((rank, False, traceback.format_exc()))
    # Leave at once: tearing the group down waits on the other rank and gains nothing here.
    os._exit(0)


class Pool:
    """``world`` ranks waiting for scenarios."""

    def __init__(self, world: int = 2) -> None:
        self.world = world
        self._start()

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        port = free_port()
        self.inboxes = [ctx.Queue() for _ in range(self.world)]
        self.outbox = ctx.Queue()
        self.procs = [
            ctx.Process(
                target=_serve,
                args=(rank, self.world, port, self.inboxes[rank], self.outbox),
                daemon=True,
            )
            for rank in range(self.world)
        ]
        for p in self.procs:
            p.start()

    def run(self, name: str, *args: Any, timeout: float = 120, **kwargs: Any) -> list[Any]:
        """Run scenario ``name`` on every rank; return the per-rank results."""
        for inbox in self.inboxes:
            inbox.put((name, args, kwargs))
        results: dict[int, tuple[bool, Any]] = {}
        try:
            while len(results) < self.world:
                rank, ok, value = self.outbox.get(timeout=timeout)
                results[rank] = (ok, value)
        except queue.Empty:
            self.restart()
            raise AssertionError(
                f"scenario {name!r}: ranks {sorted(set(range(self.world)) - set(results))} "
                f"gave no answer within {timeout} s (hang?)"
            ) from None
        failed = {r: v for r, (ok, v) in results.items() if not ok}
        if failed:
            self.restart()
            text = "\n".join(f"--- rank {r} ---\n{tb}" for r, tb in sorted(failed.items()))
            raise AssertionError(f"scenario {name!r} failed:\n{text}")
        return [results[r][1] for r in range(self.world)]

    def restart(self) -> None:
        self.close()
        self._start()

    def close(self) -> None:
        for inbox in self.inboxes:
            with contextlib.suppress(OSError, ValueError):
                inbox.put(None)
        for p in self.procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
