#!/usr/bin/env bash
# One prepared command for a machine with one CUDA GPU (about 5 minutes on an H100):
#   1. builds the large AV-Digits-DG (20,000 pairs) when espeakng-loader and scikit-learn are
#      importable, else falls back to the dataset shipped in the repository;
#   2. trains every config in configs/ plus the unimodal baselines on CUDA, leave-one-domain-
#      out over all four domains, several seeds, one process per held-out domain in parallel;
#   3. prints the merged table last (also written, with plots, to $OUT_DIR).
# Environment knobs: PYTHON, PAIRS, SEEDS, BATCH, LR, EPOCHS, DATA, OUT_DIR, and DEVICE=cpu to
# run the same code path on a CPU (the test suite does, at small size).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."                                   # examples/, so that `mmdg` imports
export PYTHONPATH="$here/../..${PYTHONPATH:+:$PYTHONPATH}"   # the gradsurgery package
PY="${PYTHON:-python3}"
PAIRS="${PAIRS:-20000}"
SEEDS="${SEEDS:-3}"
BATCH="${BATCH:-256}"
LR="${LR:-0.002}"
EPOCHS="${EPOCHS:-20}"
DEVICE="${DEVICE:-cuda}"
OUT_DIR="${OUT_DIR:-$here/../../runs/mmdg-gpu}"
DATA="${DATA:-/tmp/av-digits-dg-$PAIRS}"
mkdir -p "$OUT_DIR"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"   # four training processes share the CPU cores

if [ "$DEVICE" = cuda ]; then
  "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; \
print('torch', torch.__version__, 'on', torch.cuda.get_device_name(0))"
fi

if [ ! -f "$DATA/meta.json" ]; then
  if "$PY" -c "import espeakng_loader, sklearn" 2>/dev/null; then
    echo "building AV-Digits-DG with $PAIRS pairs in $DATA"
    start=$(date +%s)
    "$PY" -m mmdg.avdigits --out "$DATA" --pairs "$PAIRS" --seed 0 --workers 8
    echo "built in $(( $(date +%s) - start )) s"
  else
    echo "espeakng-loader or scikit-learn missing: using the shipped dataset"
    DATA="mmdg/data/av-digits-dg"
  fi
fi

domains=$("$PY" -c "import json,sys; print(' '.join(json.load(open(sys.argv[1]))['domains']))" \
  "$DATA/meta.json")
start=$(date +%s)
pids=()
for target in $domains; do
  "$PY" -m mmdg.compare --data "$DATA" --configs mmdg/configs/*.yaml mmdg/configs/*.toml \
    --seeds "$SEEDS" --targets "$target" --device "$DEVICE" --batch-size "$BATCH" --lr "$LR" \
    --epochs "$EPOCHS" --out "$OUT_DIR/$target" --quiet --no-plots \
    > "$OUT_DIR/$target.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
if [ "$status" -ne 0 ]; then tail -n 30 "$OUT_DIR"/*.log; exit 1; fi
echo "trained in $(( $(date +%s) - start )) s (batch $BATCH, lr $LR, $EPOCHS epochs)"
"$PY" -m mmdg.compare --data "$DATA" --merge "$OUT_DIR"/*/results.json --out "$OUT_DIR"
