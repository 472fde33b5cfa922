#!/usr/bin/env bash
# Reproduces the shipped default detector from ../shared/data/ffpp-c23 on a 2-core CPU machine.
# Usage: scripts/train_default.sh [DATA_DIR] [WORK_DIR]      (after `make setup`)
# Steps: crop dataset → self-blended training → choose aggregation + threshold on the validation split
# → report on the held-out test split → install as pipeline/checkpoints/detector.*
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/ffpp-c23}
WORK=${2:-runs/default}
VERSION=${VERSION:-ffpp-faces-sbi-lite0-160-v2}
BIN=.venv/bin
export HF_HUB_OFFLINE=1

FACES=${FACES:-$(dirname "$DATA")/faces}
export DFS_TORCH_THREADS=${DFS_TORCH_THREADS:-1}   # 1 thread: 2 threads spin-wait on a busy 2-core machine

$BIN/deepfakestream prepare "$DATA" --output data-cache/ffpp160 --crop-size 160 --frames-real 48 --frames-fake 16
# extra real faces (training split only): every photo/clip under $FACES except the one with drawn boxes
mkdir -p data-cache
{ echo "path,label,method,group,split"
  find "$(cd "$FACES" && pwd)" -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' -o -iname '*.mp4' \) \
      ! -name '*tracked*' | sort | sed 's/$/,REAL,original,faces-extra,train/'; } > data-cache/faces-extra.csv
$BIN/deepfakestream prepare data-cache/faces-extra.csv --output data-cache/faces160 --crop-size 160 --frames-real 48
$BIN/deepfakestream train data-cache/ffpp160 --extra-dataset data-cache/faces160 --output "$WORK/train" \
    --input-mode "${INPUT_MODE:-rgb+srm}" --epochs "${EPOCHS:-8}" --real-fakes --threads 1 --version "$VERSION"
mkdir -p pipeline/checkpoints
cp "$WORK/train/best.safetensors" pipeline/checkpoints/detector.safetensors
cp "$WORK/train/best.json" pipeline/checkpoints/detector.json
$BIN/deepfakestream evaluate "$DATA" --split val --fit --output "$WORK/eval"
$BIN/deepfakestream evaluate "$DATA" --split test --record --output "$WORK/eval"
mkdir -p docs/reports
cp "$WORK"/eval/report-val.* "$WORK"/eval/report-test.* docs/reports/
