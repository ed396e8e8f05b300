#!/usr/bin/env bash
# The performance benchmarks on one CUDA GPU, in one call (sized for about 8 minutes on one
# H100). Each prints ratios against baselines measured in the same run:
#   1. the combine step at P = 11M: host decision vs on-device decision vs compiled
#      on-device step (mode="reduce-overhead", at k = 8), target <= 3x one pass;
#   2. the combine step against TorchJD's aggregators at P = 11M and 256M;
#   3. the ResNet-18 multi-task step per engine against plain and TorchJD, k = 2, 4, 8;
#   4. the no-synchronisation check of every on-device method (CUDA's sync debug mode).
# Environment knobs: PYTHON, OUT (a folder for the printed tables, default runs/bench-gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
OUT="${OUT:-runs/bench-gpu}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
echo "== 1. on-device combine, P = 11M"
"$PY" benchmarks/on_device.py --device cuda --p 11000000 --ks 2 4 8 --compile 8 | tee "$OUT/on_device.md"
echo "== 2. combine vs TorchJD"
"$PY" benchmarks/aggregate.py --device cuda --p 11000000 256000000 --ks 2 4 8 \
    --methods sum pcgrad cagrad mgda upgrad imtlg | tee "$OUT/aggregate.md"
echo "== 3. ResNet-18 multi-task step"
"$PY" benchmarks/resnet.py --device cuda --ks 2 4 8 | tee "$OUT/resnet.md"
echo "== 4. no host synchronisation on CUDA"
"$PY" -m pytest -q tests/test_on_device.py -k cuda -p no:cacheprovider | tee "$OUT/sync.txt"
