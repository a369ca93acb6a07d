#!/usr/bin/env bash
# One device call that does what a short GPU lease allows, in order of value:
#   1. tune the triton backend on S1-S5 (resumable: the storage comes back in $OUT and is carried
#      again as .tune/), merging into results/<slug>.yaml;
#   2. bench at S1: triton (default and tuned), tilelang, fla's gated delta product and gated delta
#      rule, floors;
#   3. the GPU conformance tests of triton at S1 and S3.
# Time limits per step: TUNE_S, BENCH_S, TESTS_S (seconds).
set -u
cd "$(dirname "$0")/.."
mkdir -p /tmp/site && tar -C /tmp/site -xJf .device/bundle.tar.xz
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p .tune "$OUT/res"
nvidia-smi -L | tee "$OUT/card.txt"
timeout "${TUNE_S:-150}" python3 -m eda_tune tune --shapes benchmarks/shapes_s1_s5.yaml --backends triton \
  --trials "${TRIALS:-6}" --budget $(( ${TUNE_S:-150} - 15 )) --trial-timeout 60 \
  --storage sqlite:///.tune/studies.db --results 'results/{slug}.yaml' 2>&1 | tee "$OUT/tune.log"
cp .tune/studies.db "$OUT/" 2>/dev/null; cp results/*.yaml "$OUT/res/" 2>/dev/null
timeout "${BENCH_S:-150}" python3 -m eda_tune bench --only S1 --backends triton,tilelang,fla_gdp,fla_gdr \
  --out "$OUT/bench" 2>&1 | tee "$OUT/bench.log"
timeout "${TESTS_S:-45}" python3 -m pytest -q -m gpu tests/test_conformance.py -k "triton and (S1 or S3)" \
  -p no:cacheprovider 2>&1 | tail -8
