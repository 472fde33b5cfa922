#!/usr/bin/env bash
# The in-process, batch-scan and online-scoring 2-core timings of docs/benchmarks.md, in one quiet-machine run (about 35 min on 2 cores, measured 2026-12-04):
#   bench/run_all.sh [OUT_DIR]      then paste OUT_DIR/score.md into docs/benchmarks.md by hand
# Scan and online-scoring sections are written into docs/benchmarks.md by their benches. Sets up .venv first
# (`make setup`) on a fresh clone. Refuses to start while training, evaluation or dataset preparation runs here,
# and before each step waits up to 5 min for the 1-minute load average to fall to the benches' --max-load (0.75
# per core; the previous step's own load decays), else stops with exit 2 (machine_busy). FORCE=1 overrides both.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || make setup
OUT=${1:-runs/bench-$(date -u +%Y%m%dT%H%MZ)}
mkdir -p "$OUT"
FORCE_FLAG=()
if [ "${FORCE:-0}" = 1 ]; then
    FORCE_FLAG=(--force)
elif pgrep -f "deepfakestream (train|evaluate|prepare)" >/dev/null; then
    echo "training/evaluation/preparation is running: not a quiet machine (FORCE=1 to time anyway)" >&2; exit 2
fi
step() {
    [ "${FORCE:-0}" = 1 ] || $PY bench/bench_common.py --settle-s 300
    echo "== $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg): $*" | tee -a "$OUT/log.txt"
}
step "bench/score.py"
$PY bench/score.py | tee "$OUT/score.md"
step "bench/scan.py"
$PY bench/scan.py 32 128:loop-2t,fused,split 512:fused --json "$OUT/scan.json" --markdown "$OUT/scan.md" \
    --write-docs docs/benchmarks.md "${FORCE_FLAG[@]}"
step "bench/serve.py"
$PY bench/serve.py --write-docs docs/benchmarks.md "${FORCE_FLAG[@]}" | tee "$OUT/serve.txt"
echo "== $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg): done" | tee -a "$OUT/log.txt"
