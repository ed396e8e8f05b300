import json

import torch
import yaml  # PyYAML

import gradsurgery as gs

# A sweep file, as it could sit next to your training script.
SWEEP = """
methods:
  - sum                        # a bare name: the defaults
  - {method: mean}
  - {method: pcgrad, seed: 1}
  - {method: cagrad, c: 0.4}
  - {method: CAGrad, c: 0.4, rescale: 1}   # names are case-insensitive
"""

# The same entries work from JSON; "-" and "_" in names are ignored.
assert gs.build(json.loads('{"method": "cagrad", "c": 0.4}')).c == 0.4
assert gs.build({"method": "OGM-GE", "alpha": 0.3}).alpha == 0.3

G = torch.tensor([[1.0, 0.0, 1.0], [-1.0, 1.0, 0.5]])  # two conflicting gradient rows
for entry in yaml.safe_load(SWEEP)["methods"]:
    method = gs.build(entry)
    update = method(G)
    print(f"{method!r:40} changed={method.last_report.changed!s:5}", update.round(decimals=3))
