#!/usr/bin/env bash
# Reproduces the shipped default detector's recipe (v16: five runs averaged) from ../shared/data on a 2-core CPU machine:
# the recipe, not its bytes (a full rebuild scored 0.937 balanced val AUC against v16's 0.944; docs/training.md, v20)
# (five times one run's training: ~5–6 h on 2 cores, so more than one session; every run resumes where it stopped).
# Usage: scripts/train_default.sh [SHARED_DATA_DIR] [WORK_DIR]      (after `make setup`)
# Env: CROSSES (one training run per share of pseudo-fakes blended from another person's face; default "0 0.5" =
# v7's and v9's recipes) and SEEDS (one run per seed of the training's random draws; the split's seed is fixed;
# default "0 1"; SEED=N = SEEDS=N), LLD_RUN (one more run, of the first share and seed, with this --layer-decay:
# v16's; default 0.85, empty = none): two or more runs are averaged into one detector, a "soup" (the default: v7,
# v9, v12, v13, v16), EMA (weight moving-average decay, 0 = off), CROP, MARGIN (crop margin per side, a fraction of the face box; travels in
# the card), ENCODER, VERSION, EPOCHS, PATIENCE, STEPS, THREADS, TARGET_FPR, REAL_FAKES (1: also train on the
# FF++ train split's fakes, 0: self-blends only), CODEC (share of crops, any label, sent through the H.264 round trip; default 0.5), PAIRED (1: each real crop and its pseudo-fake in one batch), CAPTURE (share of crops given a camera's grain or softness before any blend; default 0), PARTS (share of crops with the eyes, nose or mouth blacked out; default 0), BALANCE (sqrt: each source's share of an epoch grows with the square root of its size, the default; none: with its size), LAYER_DECAY (for the CROSSES x SEEDS runs: encoder layers learn at lr x this**depth from the top; default 0 = one lr), BLEND_MAP (weight of the auxiliary loss that predicts where each pseudo-fake was blended; default 0 = off), DROP_PATH (stochastic depth: the deepest encoder blocks skipped at this rate in training; default 0 = off), INPUT_MODE (rgb+srm, the default; rgb: no SRM noise filters; srm), MESH (share of self-blends masked along the face's dense outline from MediaPipe's face mesh instead of MTCNN's 5 points; default 0 = off), LOCAL (share of self-blends confined to the mouth or the eyes; default 0 = off), SAM (sharpness-aware minimisation radius, e.g. 0.05; default 0 = off; 2x a step's cost), SMOOTH (label smoothing: targets moved this far toward 0.5; default 0 = off), MORE_SETS (more labelled sets to train and validate on, below), INIT (start every run from this trained detector instead of ImageNet, e.g. the shipped one: fine-tuning; default none), LR (peak learning rate; default 3e-4);
# STOP_AFTER=prepare|train for partial runs (any other value is refused: a typo would run on and install).
# VERSION default: ffpp-utk-th-sbi-ENCODER-CROPmMARGIN[-ema][-soupN]-rebuild-YYYYMMDD, never the shipped name; the
# card's data description is counted from the prepared crop sets (scripts/data_note.py). Runs at another CROP or
# MARGIN than 224 px and 0.15 train in their own folders (train-xb0-s0-96m15; the default's keep their names, so
# earlier runs resume). Every rerun runs each `prepare`: it skips what is cut as the labels say (16 s over the 8,201
# UTKFace photos) and follows edited labels.
# Steps: label CSVs for the extra real sets → crop datasets → one self-blended training run per share and seed
# (resumable: rerun the script after an interruption) → their weight average → operating point on the
# validation split → report on the held-out test split and real sets → install as pipeline/checkpoints/detector.*
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${1:-../shared/data}
WORK=${2:-runs/v16}
case "${STOP_AFTER:-}" in
  ""|prepare|train) ;;
  *) echo "invalid_configuration: STOP_AFTER=$STOP_AFTER: use prepare, train or leave it unset (unset: train, then install over pipeline/checkpoints)" >&2; exit 2 ;;
esac
# before anything is written: the other sets' folders are checked by real_sets.py
[ -d "$SHARED/ffpp-c23" ] || { echo "not_found: SHARED_DATA_DIR $SHARED has no ffpp-c23 folder; nothing written" >&2; exit 2; }
CROP=${CROP:-224}                     # crop size = model input size
MARGIN=${MARGIN:-0.15}
export DFS_DETECT__MARGIN=$MARGIN
SUF=$CROP; [ "$MARGIN" = 0.3 ] || SUF="${CROP}m${MARGIN#0.}"   # crops of another margin live beside, not over
RUN_SUF=""; [ "$SUF" = 224m15 ] || RUN_SUF="-$SUF"   # so do runs; the default's keep their folder names
CROSSES=${CROSSES:-0 0.5}
SEEDS=${SEEDS:-${SEED:-0 1}}
ENCODER=${ENCODER:-tf_efficientnet_lite0}
BIN=.venv/bin
export HF_HUB_OFFLINE=1
export DFS_TORCH_THREADS=${DFS_TORCH_THREADS:-1}   # per prepare process; training sets its own threads

$BIN/python scripts/real_sets.py "$SHARED" data-cache
mkdir -p "$WORK"
for split in train val; do   # crops for training and validation only; the test slice is scored from the files
  (head -1 data-cache/utkface.csv; grep -a ",$split" data-cache/utkface.csv || true) > "data-cache/utkface-$split.csv"
done
D=data-cache
# always run: `prepare` resumes (what is cut as the labels say is skipped) and follows edited labels. Two
# single-threaded prepares at a time (one per core). One MTCNN pass (first pass = the minimum face): the crops of
# every shipped detector were cut that way
prep() { DFS_DETECT__FIRST_PASS_MIN_FACE_PX=40 $BIN/deepfakestream prepare "$1" -o "$2" "${@:3}" --crop-size "$CROP"; }
prep "$SHARED/ffpp-c23" $D/ffpp$SUF --frames-real 48 --frames-fake 16 & p1=$!
{ prep $D/talking-heads.csv $D/th$SUF --frames-real 32; prep $D/faces.csv $D/faces$SUF --frames-real 48; } & p2=$!
wait $p1; wait $p2   # each wait returns its job's status, so set -e stops on a failed prepare
# UTKFace chips are tight 200 px faces: a larger minimum face size skips most of MTCNN's pyramid
DFS_DETECT__MIN_FACE_PX=80 prep $D/utkface-train.csv $D/utk$SUF --frames-real 1 & p1=$!
DFS_DETECT__MIN_FACE_PX=80 prep $D/utkface-val.csv $D/utk${SUF}val --frames-real 1 & p2=$!
wait $p1; wait $p2
# More data (a learning curve, docs/training.md v45/v46, saw no gain from more FF++ videos; other sets are untested):
# MORE_SETS="SET ..." adds labelled sets in any layout
# `prepare` reads (labels CSV, DFDC, FaceForensics++); no spaces in paths, relative ones read from the repository root
# as SHARED_DATA_DIR is. Each is split like FF++ (by identity group, or by a CSV's split column): its train split is
# trained on (reals as SBI sources, fakes as fakes), its val split validated on and in the fit of the operating point,
# its test split reported; the model card names each set.
MORE=(); MORE_EVAL=(); MORE_NOTE=""
for src in ${MORE_SETS:-}; do
  name=$(basename "${src%.csv}"); out="$D/more-$name$SUF"
  if [ ! -e "$src" ]; then echo "MORE_SETS: $src not found" >&2; exit 2; fi
  if [ -e "$out/.source" ] && [ "$(cat "$out/.source")" != "$src" ]; then
    echo "MORE_SETS: $out holds another set named $name ($(cat "$out/.source")); rename one" >&2; exit 2
  fi
  prep "$src" "$out" --frames-real 32 --frames-fake 16; echo "$src" > "$out/.source"
  MORE+=(--extra-dataset "$out"); MORE_EVAL+=(--extra "$src"); MORE_NOTE="$MORE_NOTE $name ($src);"
done
[ "${STOP_AFTER:-}" = prepare ] && exit 0

DATA_NOTE=$($BIN/python scripts/data_note.py "$SHARED" $D "$SUF" "${REAL_FAKES:-1}")   # counted from the crop sets
FAKES=--real-fakes; [ "${REAL_FAKES:-1}" = 0 ] && FAKES=--no-real-fakes
[ -n "$MORE_NOTE" ] && DATA_NOTE="$DATA_NOTE More labelled sets (split by identity group 50/25/25 or their own split column, train split used):$MORE_NOTE"
PAIRED_FLAG=--no-paired; [ "${PAIRED:-0}" = 1 ] && PAIRED_FLAG=--paired
INIT_FLAG=(); [ -n "${INIT:-}" ] && INIT_FLAG=(--init "$INIT")
RUNS=()
JOBS=(); for seed in $SEEDS; do for cross in $CROSSES; do JOBS+=("$cross $seed ${LAYER_DECAY:-0}"); done; done
LLD_RUN=${LLD_RUN-0.85}; [ -n "$LLD_RUN" ] && JOBS+=("${CROSSES%% *} ${SEEDS%% *} $LLD_RUN")
EMA_TAG=-ema; [ "${EMA:-0.997}" = 0 ] && EMA_TAG=""; SOUP=-soup${#JOBS[@]}; [ ${#JOBS[@]} = 1 ] && SOUP=""
VERSION=${VERSION:-ffpp-utk-th-sbi-${ENCODER#tf_efficientnet_}-$SUF$EMA_TAG$SOUP-rebuild-$(date -u +%Y%m%d)}
for job in "${JOBS[@]}"; do read -r cross seed lld <<< "$job"   # each run resumes from its own last.pt
  NAME="xb$cross-s$seed"; [ "$lld" = 0 ] || NAME="$NAME-lld$lld"; OUT="$WORK/train-$NAME$RUN_SUF"
  RUNS+=("$OUT/best.safetensors")
  RESUME=""; [ -f "$OUT/last.pt" ] && RESUME="--resume"
  $BIN/deepfakestream train $D/ffpp$SUF --extra-dataset $D/th$SUF --extra-dataset $D/faces$SUF \
      --extra-dataset $D/utk$SUF --extra-dataset $D/utk${SUF}val "${MORE[@]}" --output "$OUT" \
      --encoder "$ENCODER" --input-mode "${INPUT_MODE:-rgb+srm}" --epochs "${EPOCHS:-6}" --patience "${PATIENCE:-3}" --max-steps-per-epoch "${STEPS:-250}" \
      --codec-p "${CODEC:-0.5}" --capture-p "${CAPTURE:-0}" --parts-p "${PARTS:-0}" --source-balance "${BALANCE:-sqrt}" --layer-decay "$lld" --blend-map "${BLEND_MAP:-0}" --drop-path "${DROP_PATH:-0}" --mesh-p "${MESH:-0}" --local-p "${LOCAL:-0}" --sam-rho "${SAM:-0}" --label-smoothing "${SMOOTH:-0}" --lr "${LR:-3e-4}" "${INIT_FLAG[@]}" --cross-p "$cross" --ema-decay "${EMA:-0.997}" $FAKES $PAIRED_FLAG --threads "${THREADS:-2}" --seed "$seed" --version "$VERSION-$NAME" $RESUME \
      --data-description "$DATA_NOTE"
done
[ "${STOP_AFTER:-}" = train ] && exit 0   # comparison runs: keep the shipped checkpoint

if [ ${#RUNS[@]} -gt 1 ]; then
  $BIN/deepfakestream soup "${RUNS[@]}" --output "$WORK/soup/detector.safetensors" --version "$VERSION"
  BEST="$WORK/soup/detector"
else
  BEST="${RUNS[0]%.safetensors}"
fi
# fitted and reported on a copy; installed only when both passed (a failed evaluation leaves the shipped one)
SHIP="$WORK/ship/detector"; mkdir -p "$WORK/ship" pipeline/checkpoints docs/reports
cp "$BEST.safetensors" "$SHIP.safetensors"; cp "$BEST.json" "$SHIP.json"
EXTRA="--extra data-cache/talking-heads.csv --extra data-cache/utkface.csv ${MORE_EVAL[*]}"
$BIN/deepfakestream evaluate "$SHARED/ffpp-c23" --split val $EXTRA --fit --target-fpr "${TARGET_FPR:-0.05}" \
    --checkpoint "$SHIP.safetensors" --output "$WORK/eval"
$BIN/deepfakestream evaluate "$SHARED/ffpp-c23" --split test $EXTRA --record --checkpoint "$SHIP.safetensors" --output "$WORK/eval"
cp "$SHIP.safetensors" pipeline/checkpoints/detector.safetensors
cp "$SHIP.json" pipeline/checkpoints/detector.json
cp "$WORK"/eval/report-val.* "$WORK"/eval/report-test.* "$WORK"/eval/reliability-*.png docs/reports/
