#!/usr/bin/env bash
# One GPU sitting, batched: kernel and layer tests on CUDA, bench/train.py on the GPU, then
# the GPU reference study (studies/gpu-mini.yaml) for whatever time is left, resuming from
# its registry. Everything worth keeping lands in $OUT (default ./gpu-out).
#
#   bash bench/gpu_session.sh                # all steps, within TOTAL_S (default 540 s)
#   STEPS="tests bench" bash bench/gpu_session.sh
#   STEPS=study TOTAL_S=570 bash bench/gpu_session.sh   # a later call: the study only
#
# The whole script keeps within TOTAL_S seconds (one command on a lent machine may run
# 600 s): the study gets what the other steps left, less 60 s for the SIGINT to save
# its state (STUDY_S overrides that), and is skipped if under 60 s remain.
#
# Needs a CUDA GPU with torch and triton; the study step also needs ray and optuna (the
# tests and the benchmark do not). The study keeps its state in runs/gpu-mini/ and its
# corpus in data/py-sitepackages/ (both git-ignored), so a second run on the same
# machine picks up where the first stopped; copy runs/gpu-mini/{study.yaml,results.csv}
# to data/reference/gpu-mini/ once it is complete, then `raysweep report` it and
# `python -m raysweep.fit.results_page` (docs/results.md).
set -uo pipefail
OUT=${OUT:-gpu-out}
STEPS=${STEPS:-"tests bench study"}
TOTAL_S=${TOTAL_S:-540}
mkdir -p "$OUT"
log() { echo "[gpu_session $(date +%T)] $*" | tee -a "$OUT/session.log"; }

python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
  log "no CUDA device: nothing to do"; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/gpu.csv" 2>&1
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" \
  | tee -a "$OUT/session.log"

for step in $STEPS; do
  case $step in
  tests)
    log "kernel, layer and format tests on CUDA"
    python3 -m pytest -q tests/kernels tests/train/test_layers_compressed.py \
      tests/train/test_layers_routing.py tests/formats/test_formats_cuda.py \
      tests/train/test_compile.py -m "gpu or not slow" \
      -p no:cacheprovider >"$OUT/tests.txt" 2>&1
    log "tests rc=$? ($(tail -1 "$OUT/tests.txt"))"
    ;;
  bench)
    log "bench/train.py --gpu-only"
    python3 bench/train.py --gpu-only >"$OUT/bench_train.txt" 2>"$OUT/bench_train.err"
    log "bench rc=$?"
    tail -1 "$OUT/bench_train.txt" >"$OUT/bench_train.json"
    ;;
  study)
    [ -f data/py-sitepackages/meta.json ] || {
      log "preparing data/py-sitepackages"
      raysweep data prepare sitepackages --out data/py-sitepackages --max-bytes 150000000 \
        >>"$OUT/session.log" 2>&1; }
    study_s=${STUDY_S:-$((TOTAL_S - SECONDS - 60))}
    if [ "$study_s" -lt 60 ]; then
      log "study skipped: ${study_s}s left of TOTAL_S=${TOTAL_S}"; continue; fi
    log "raysweep run studies/gpu-mini.yaml for at most ${study_s}s"
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 10 \
      >"$OUT/gpu_util.csv" 2>/dev/null &
    smi=$!
    timeout -s INT -k 50 "$study_s" raysweep run studies/gpu-mini.yaml --out runs --no-report \
      >"$OUT/study.txt" 2>&1
    log "study rc=$? (124/130: stopped by the time limit; rerun to resume)"
    kill "$smi" 2>/dev/null
    cp runs/gpu-mini/results.csv runs/gpu-mini/registry.jsonl "$OUT/" 2>/dev/null
    raysweep status runs/gpu-mini >"$OUT/status.txt" 2>&1
    ;;
  *) log "unknown step $step (allowed: tests bench study)"; exit 2 ;;
  esac
done
log "done; outputs in $OUT"
