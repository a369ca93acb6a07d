#!/usr/bin/env bash
# One device call that does what a short GPU lease allows; each step has its own time limit in
# seconds (0 skips it), and everything it prints goes to $OUT/run.log:
#   BWD_S    benchmarks/gpu_triton_bwd_intra.py: the backward variants, checked, then timed at S1;
#   TUNE_S   tune the triton backend on S1-S5 (TRIALS per study; resumable: the storage comes back
#            in $OUT and is carried again as .tune/), merging into results/<slug>.yaml;
#   BENCH_S  bench ONLY (shapes of the standard set) for BENCH_BACKENDS, default and tuned configs,
#            fla's baselines, floors;
#   TESTS_S  the gpu-marked tests (TESTS_K: a pytest -k expression).
set -u
cd "$(dirname "$0")/.."
mkdir -p /tmp/site && tar -C /tmp/site -xJf .device/bundle.tar.xz
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
export OUT
mkdir -p .tune "$OUT/res"
LOG="$OUT/run.log"
nvidia-smi -L | tee -a "$LOG"
# resume the committed studies of this card unless a storage was carried in .tune/
SLUG=$(python3 -c 'from eda_tune.hardware import detect; print(detect("cuda").slug)')
if [ ! -f .tune/studies.db ] && [ -f "results/studies/${SLUG}-triton.db" ]; then
  cp "results/studies/${SLUG}-triton.db" .tune/studies.db
  echo "resuming results/studies/${SLUG}-triton.db" | tee -a "$LOG"
fi
if [ "${BWD_S:-0}" -gt 0 ]; then
  timeout "$BWD_S" python3 benchmarks/gpu_triton_bwd_intra.py >> "$LOG" 2>&1
  echo "bwd variants: rc $?" | tee -a "$LOG"
fi
if [ "${TUNE_S:-150}" -gt 0 ]; then
  timeout "$TUNE_S" python3 -m eda_tune tune --shapes benchmarks/shapes_s1_s5.yaml --backends "${TUNE_BACKENDS:-triton}" \
    --trials "${TRIALS:-6}" --budget $(( TUNE_S - 15 )) --trial-timeout 60 \
    --storage sqlite:///.tune/studies.db --results 'results/{slug}.yaml' >> "$LOG" 2>&1
  echo "tune: rc $?" | tee -a "$LOG"
  cp .tune/studies.db "$OUT/" 2>/dev/null; cp results/*.yaml "$OUT/res/" 2>/dev/null
fi
if [ "${BENCH_S:-150}" -gt 0 ]; then
  timeout "$BENCH_S" python3 -m eda_tune bench --only "${ONLY:-S1}" --backends "${BENCH_BACKENDS:-triton,fla_gdp,fla_gdr}" \
    --out "$OUT/bench" >> "$LOG" 2>&1
  echo "bench: rc $?" | tee -a "$LOG"
fi
if [ "${TESTS_S:-0}" -gt 0 ]; then
  timeout "$TESTS_S" python3 -m pytest -q -m gpu -k "${TESTS_K:-triton}" -p no:cacheprovider >> "$LOG" 2>&1
  echo "gpu tests: rc $?" | tee -a "$LOG"
fi
grep -E "^\[|rc |best|S[1-5]|V1|ERROR|Error|passed|failed" "$LOG" | tail -60
