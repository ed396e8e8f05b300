"""A training step that never waits for the device, then the same step compiled."""

import torch
from torch import nn

import gradsurgery as gs

torch.manual_seed(0)
trunk = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64))
heads = nn.ModuleList(nn.Linear(64, 1) for _ in range(3))
params = [*trunk.parameters(), *heads.parameters()]
optimizer = torch.optim.SGD(params, lr=0.01)
method = gs.PCGrad(seed=0)
x, ys = torch.randn(128, 16), torch.randn(3, 128, 1)

for _ in range(3):
    optimizer.zero_grad()
    z = trunk(x)
    losses = {f"task{i}": nn.functional.mse_loss(h(z), ys[i]) for i, h in enumerate(heads)}
    report = gs.backward(losses, {"trunk": trunk}, method, sync=False, on_nonfinite="skip")
    optimizer.step()
# Nothing above read a value on the host; reading the report does (once, here):
print(report.skipped, report["trunk"].projected, report["trunk"].weights.tolist())

# The surgery alone, compiled: Gramian, decision and combine in one captured graph.
gmp = gs.GMP()


def surgery(video: torch.Tensor, audio: torch.Tensor, conf: torch.Tensor) -> torch.Tensor:
    table = gs.GradientTable.from_matrices({"video": video, "audio": audio}, ["cls", "dom"])
    signals = {
        "video": {"cls": conf[0], "dom": conf[1]},
        "audio": {"cls": conf[2], "dom": conf[3]},
    }
    updates, _ = gmp.apply(table, signals, on_nonfinite="skip", sync=False)
    return updates["video"]


# fullgraph=True fails on any graph break, hence on any host synchronisation. The
# aot_eager backend keeps this example quick on a CPU; leave it out to get Inductor's
# kernels, and on CUDA add mode="reduce-overhead" to replay the step as a CUDA graph.
compiled = torch.compile(surgery, fullgraph=True, backend="aot_eager")
rows = torch.randn(2, 1000), torch.randn(2, 500)
conf = torch.tensor([0.9, 0.3, 0.4, 0.6])
print(torch.allclose(compiled(*rows, conf), surgery(*rows, conf)))
