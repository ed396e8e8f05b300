import torch

import gradsurgery as gs

trunk = torch.nn.Linear(8, 16)  # shared by two tasks
head_a, head_b = torch.nn.Linear(16, 1), torch.nn.Linear(16, 1)
x, y_a, y_b = torch.randn(32, 8), torch.randn(32, 1), torch.randn(32, 1)
h = trunk(x).relu()
losses = {"a": (head_a(h) - y_a).pow(2).mean(), "b": (head_b(h) - y_b).pow(2).mean()}
report = gs.backward(losses, {"trunk": trunk.parameters()}, gs.PCGrad())  # not loss.backward()
print(report["trunk"].cosine, report.changed)  # then optimizer.step() as usual
