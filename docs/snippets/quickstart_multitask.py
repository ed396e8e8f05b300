import torch
from torch import nn

import gradsurgery as gs

torch.manual_seed(0)


class TwoTaskNet(nn.Module):
    """A shared trunk with a regression head and a classification head."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU())
        self.reg_head = nn.Linear(32, 1)
        self.cls_head = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x)
        return self.reg_head(h).squeeze(-1), self.cls_head(h)


model = TwoTaskNet()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
method = gs.PCGrad(seed=0)  # or gs.build("pcgrad"), gs.CAGrad(c=0.4), ...

# Toy data: the two tasks read overlapping input features.
x = torch.randn(128, 10)
y_reg = x[:, 0] - 2 * x[:, 1]
y_cls = (x[:, 1] > 0).long() + (x[:, 2] > 0).long()

for _ in range(30):
    optimizer.zero_grad(set_to_none=True)
    pred_reg, logits = model(x)
    losses = {  # objective name -> scalar loss; the order is the table's row order
        "regression": nn.functional.mse_loss(pred_reg, y_reg),
        "classification": nn.functional.cross_entropy(logits, y_cls),
    }
    # Replaces `sum(losses.values()).backward()`: the trunk gets PCGrad's update,
    # the two heads get their ordinary gradients.
    report = gs.backward(losses, {"trunk": model.trunk.parameters()}, method)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)  # works as usual
    optimizer.step()

trunk = report["trunk"]
print("conflict:", bool(trunk.conflict[0, 1]), "projected:", trunk.projected)
print("cosine(regression, classification):", round(float(trunk.cosine[0, 1]), 3))
print(report.to_dict()["blocks"]["trunk"]["weights"])
