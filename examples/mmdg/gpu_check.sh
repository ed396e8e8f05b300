#!/usr/bin/env bash
# One prepared command for a machine with one CUDA GPU, sized for 8 minutes on one H100
# (16 CPU cores):
#   1. builds both AV-Digits-DG sets large (PAIRS pairs each; the languages set needs
#      espeakng-loader and scikit-learn, the acoustic set espeakng-loader) in parallel, and
#      falls back to the copies shipped in the repository when those packages are missing;
#   2. trains every method config in configs/ plus the unimodal baselines on CUDA,
#      leave-one-domain-out over all four domains, SEEDS seeds, one process per (set,
#      held-out domain): 8 processes of OMP_NUM_THREADS threads each share the GPU;
#   3. prints each set's merged table (also written, with plots, to $OUT_DIR/<set>).
# Environment knobs: PYTHON, PAIRS, SEEDS, BATCH, LR, EPOCHS, SETS ("acoustic language"),
# CONFIGS (config files, default every method config), DATA (languages set folder),
# ACOUSTIC_DATA, OUT_DIR, and DEVICE=cpu to run the same code path on a CPU (the test suite
# does, at small size).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."                                   # examples/, so that `mmdg` imports
export PYTHONPATH="$here/../..${PYTHONPATH:+:$PYTHONPATH}"   # the gradsurgery package
PY="${PYTHON:-python3}"
PAIRS="${PAIRS:-12000}"
SEEDS="${SEEDS:-2}"
BATCH="${BATCH:-256}"
LR="${LR:-0.002}"
EPOCHS="${EPOCHS:-20}"
DEVICE="${DEVICE:-cuda}"
SETS="${SETS:-acoustic language}"
CONFIGS="${CONFIGS:-mmdg/configs/*.yaml mmdg/configs/*.toml}"
OUT_DIR="${OUT_DIR:-$here/../../runs/mmdg-gpu}"
DATA="${DATA:-/tmp/av-digits-dg-$PAIRS}"
ACOUSTIC_DATA="${ACOUSTIC_DATA:-/tmp/av-digits-dg-acoustic-$PAIRS}"
mkdir -p "$OUT_DIR"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"   # eight training processes share 16 cores

if [ "$DEVICE" = cuda ]; then
  "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; \
print('torch', torch.__version__, 'on', torch.cuda.get_device_name(0))"
fi

# build <set> <folder> <shipped copy> <module> <packages...>: the folder to train on.
build() {
  local set=$1 folder=$2 shipped=$3 module=$4; shift 4
  if [ -f "$folder/meta.json" ]; then echo "$folder"; return; fi
  if "$PY" -c "import $(IFS=,; echo "$*")" 2>/dev/null; then
    if "$PY" -m "$module" --out "$folder" --pairs "$PAIRS" --seed 0 --workers 6 \
      > "$OUT_DIR/build-$set.log" 2>&1; then echo "$folder"; return; fi
    echo "building $set failed (see $OUT_DIR/build-$set.log)" >&2
  else
    echo "$* missing: $set uses the shipped copy" >&2
  fi
  echo "$shipped"
}

start=$(date +%s)
declare -A folder
for set in $SETS; do
  case $set in
    acoustic) build acoustic "$ACOUSTIC_DATA" mmdg/data/av-digits-dg-acoustic mmdg.acoustic \
                espeakng_loader > "$OUT_DIR/$set.data" & ;;
    language) build language "$DATA" mmdg/data/av-digits-dg mmdg.avdigits \
                espeakng_loader sklearn > "$OUT_DIR/$set.data" & ;;
    *) echo "unknown set $set (acoustic, language)" >&2; exit 2 ;;
  esac
done
wait
for set in $SETS; do
  folder[$set]=$(tail -n 1 "$OUT_DIR/$set.data")
  echo "$set: $(basename "${folder[$set]}")"
done
echo "data ready in $(( $(date +%s) - start )) s"

start=$(date +%s)
pids=()
for set in $SETS; do
  data=${folder[$set]}
  domains=$("$PY" -c "import json,sys; print(' '.join(json.load(open(sys.argv[1]))['domains']))" \
    "$data/meta.json")
  for target in $domains; do
    # shellcheck disable=SC2086  # CONFIGS is a list of globs
    "$PY" -m mmdg.compare --data "$data" --configs $CONFIGS \
      --seeds "$SEEDS" --targets "$target" --device "$DEVICE" --batch-size "$BATCH" --lr "$LR" \
      --epochs "$EPOCHS" --out "$OUT_DIR/$set/$target" --quiet --no-plots \
      > "$OUT_DIR/$set-$target.log" 2>&1 &
    pids+=($!)
  done
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
if [ "$status" -ne 0 ]; then tail -n 30 "$OUT_DIR"/*.log; exit 1; fi
echo "trained in $(( $(date +%s) - start )) s (batch $BATCH, lr $LR, $EPOCHS epochs)"
for set in $SETS; do
  echo "== $set =="
  "$PY" -m mmdg.compare --data "${folder[$set]}" --merge "$OUT_DIR/$set"/*/results.json \
    --out "$OUT_DIR/$set"
done
