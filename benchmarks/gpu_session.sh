#!/usr/bin/env bash
# One device call that does what a short GPU lease allows; each step has its own time limit in
# seconds (0 skips it), and everything it prints goes to $OUT/run.log:
#   TMS_S    benchmarks/gpu_tm_solver.py: the forward's tm_solver values checked, then timed at
#            EDA_TMS_SHAPES (default S1-S5) beside fla, and forward+backward at EDA_TMS_TRAIN; $OUT/tms;
#   SEG_S    benchmarks/gpu_segments.py: the segments switch checked, then timed at S4, S2, S1 with fla;
#   BWD_S    benchmarks/gpu_triton_bwd_intra.py: the backward variants, checked, then timed at S1
#            (BWD_TAGS: only these timing variants; BWD_CHECKS=0: no checks); $OUT/bwd_intra.json;
#   ERR_S    benchmarks/grad_error.py: gradient errors of Triton variants beside fla's (ERR_VARIANTS,
#            ERR_SEEDS); $OUT/grad_error.json;
#   PROF_S   benchmarks/profile_kernels.py: each kernel's GPU time in one fwd+bwd step (torch.profiler)
#            for PROF_BACKENDS (default tilelang,triton) at PROF_ONLY (default S1), then each of
#            PROF_CONFIGS (space-separated BACKEND:key=value,...); $OUT/prof.json;
#   NCU_S    Nsight Compute over the five backward kernels at S1 (benchmarks/ncu_bwd.py): $OUT/ncu_bwd.txt;
#   TUNE_S   tune the triton backend on S1-S5 (TRIALS per study, counting the trials already stored:
#            a resumed study with TRIALS or more runs none; resumable: the storage comes back
#            in $OUT and is carried again as .tune/), merging into results/<slug>.yaml; REFRESH=1:
#            no new trials, each study's best and the current default timed again (tune --refresh);
#            TUNE_MODE fwd|fwd_bwd|both: tune --mode (training classes: fwd_bwd);
#            TRIAL_TIMEOUT (default 60 s) kills a slower trial (torch_compile's max-autotune modes
#            compile for longer);
#   BENCH_S  bench ONLY (shapes of the standard set) for BENCH_BACKENDS, default and tuned configs,
#            fla's baselines, floors (BENCH_FWD_ONLY=1: forward only; BENCH_NO_TUNED=1: no tuned configs);
#   TESTS_S  the gpu-marked tests (TESTS_K: a pytest -k expression; all when empty);
#   CHECK_S  `eda-tune check` of CHECK_BACKENDS (default: every backend and fla) at CHECK_ONLY shapes
#            (default: all of its GPU set; CHECK_SHAPES: another shapes file); reports in $OUT/check;
#   CHECK2_S a second check of CHECK2_BACKENDS at CHECK2_ONLY; reports in $OUT/check2 (join the two,
#            and earlier runs, with `eda-tune check --merge`);
#   PROBE_S  benchmarks/gpu_config_probe.py: one Triton config (PROBE_CONFIG) and variants of it
#            (PROBE_VARIANTS) checked against the float64 reference at PROBE_PROBLEMS; $OUT/probe.json;
#   TL_S     benchmarks/gpu_tilelang_check.py (TileLang configs checked, then timed at S1; TL_ARGS: more
#            arguments, e.g. --outside-space to run the configs the space rejects, num_stages 2);
#   COMPARE  1: compare that bench against results/bench/<slug>.json and results/<slug>.yaml (as the
#            GPU CI workflow does; reports in $OUT/compare.tgz);
#   COLD_S   benchmarks/tuner_bench.py cold-start (first call at S1 in a fresh process);
#   EFF_S    benchmarks/tuner_bench.py efficiency: the triton grid at S1 with EFF_FIX pinned
#            (resumable: results/studies/<slug>-efficiency.db, back as $OUT/eff.db), then TPE and
#            random replayed against it; EFF_J (default 8) processes build the grid's configs
#            first (tune --precompile), so the timed trials find Triton's cache warm.
# fla's autotuning (about 75 s per shape class) is cached by Triton: the results (not the compiled
# kernels) come back as $OUT/autotune.tgz; put it in .tcache/ and carry .tcache to skip it next time
# (without one, benchmarks/cache/fla_autotune_<slug>.tgz, committed from an earlier call, is used).
# FLA_FRESH=1 uses neither (a card of its own first bench: the cache holds another card's picks when
# EDA_TUNE_DEVICE_SLUG makes an H100 read the H200's results, both being sm_90).
set -u
cd "$(dirname "$0")/.."
mkdir -p /tmp/site && tar -C /tmp/site -xJf .device/bundle.tar.xz
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
export OUT
mkdir -p .tune "$OUT/res" .tcache/triton
LOG="$OUT/run.log"
nvidia-smi -L | tee -a "$LOG"
SLUG=$(python3 -c 'from eda_tune.hardware import detect; print(detect("cuda").slug)')
export TRITON_CACHE_DIR=$PWD/.tcache/triton
if [ "${FLA_FRESH:-0}" = 1 ]; then
  echo "fla autotunes afresh (FLA_FRESH=1: no cached autotune results)" | tee -a "$LOG"
elif [ -f .tcache/autotune.tgz ]; then
  tar -C .tcache/triton -xzf .tcache/autotune.tgz
elif [ -f "benchmarks/cache/fla_autotune_${SLUG}.tgz" ]; then
  tar -C .tcache/triton -xzf "benchmarks/cache/fla_autotune_${SLUG}.tgz"
fi
# resume the committed studies of this card unless a storage was carried in .tune/
if [ ! -f .tune/studies.db ] && [ -f "results/studies/${SLUG}.db" ]; then
  cp "results/studies/${SLUG}.db" .tune/studies.db
  echo "resuming results/studies/${SLUG}.db" | tee -a "$LOG"
fi
if [ "${TESTS_S:-0}" -gt 0 ]; then
  timeout "$TESTS_S" python3 -m pytest -v -m gpu --durations=40 ${TESTS_K:+-k "$TESTS_K"} -p no:cacheprovider >> "$LOG" 2>&1
  echo "gpu tests: rc $?" | tee -a "$LOG"
fi
if [ "${PROBE_S:-0}" -gt 0 ]; then
  OUT=$OUT timeout "$PROBE_S" python3 benchmarks/gpu_config_probe.py >> "$LOG" 2>&1
  echo "config probe: rc $?" | tee -a "$LOG"
fi
if [ "${TL_S:-0}" -gt 0 ]; then
  mkdir -p "$OUT/tl"
  OUT=$OUT/tl timeout "$TL_S" python3 benchmarks/gpu_tilelang_check.py --shapes "${TL_SHAPES:-S1}" \
    --budget-s $(( TL_S - 30 )) ${TL_ARGS:-} >> "$LOG" 2>&1
  echo "tilelang check: rc $?" | tee -a "$LOG"
fi
if [ "${TMS_S:-0}" -gt 0 ]; then
  mkdir -p "$OUT/tms"
  OUT=$OUT/tms timeout "$TMS_S" python3 benchmarks/gpu_tm_solver.py >> "$LOG" 2>&1
  echo "tm solver: rc $?" | tee -a "$LOG"
fi
if [ "${SEG_S:-0}" -gt 0 ]; then
  mkdir -p "$OUT/seg"
  OUT=$OUT/seg EDA_SEG_BUDGET=$(( SEG_S - 40 )) timeout "$SEG_S" python3 benchmarks/gpu_segments.py >> "$LOG" 2>&1
  echo "segments: rc $?" | tee -a "$LOG"
fi
if [ "${BWD_S:-0}" -gt 0 ]; then
  OUT=$OUT timeout "$BWD_S" python3 benchmarks/gpu_triton_bwd_intra.py >> "$LOG" 2>&1
  echo "bwd variants: rc $?" | tee -a "$LOG"
fi
if [ "${ERR_S:-0}" -gt 0 ]; then
  OUT=$OUT timeout "$ERR_S" python3 benchmarks/grad_error.py >> "$LOG" 2>&1
  echo "grad error: rc $?" | tee -a "$LOG"
fi
if [ "${PROF_S:-0}" -gt 0 ]; then
  PROF_ARGS=()
  for c in ${PROF_CONFIGS:-}; do PROF_ARGS+=(--config "$c"); done
  timeout "$PROF_S" python3 benchmarks/profile_kernels.py --backends "${PROF_BACKENDS-tilelang,triton}" \
    --only "${PROF_ONLY:-S1}" "${PROF_ARGS[@]}" --json "$OUT/prof.json" >> "$LOG" 2>&1
  echo "profile: rc $?" | tee -a "$LOG"
fi
if [ "${NCU_S:-0}" -gt 0 ]; then
  timeout "$NCU_S" ncu --clock-control none --section SpeedOfLight --section LaunchStats --section Occupancy \
    --section WarpStateStats --section SchedulerStats -k "regex:eda_(fwd_wu|fwd_h_|bwd)" --launch-skip 5 \
    --launch-count 5 python3 benchmarks/ncu_bwd.py > "$OUT/ncu_bwd.txt" 2>&1
  echo "ncu backward: rc $?" | tee -a "$LOG"
fi
if [ "${TUNE_S:-150}" -gt 0 ]; then
  timeout "$TUNE_S" python3 -m eda_tune tune --shapes "${TUNE_SHAPES:-benchmarks/shapes_s1_s5.yaml}" --backends "${TUNE_BACKENDS:-triton}" \
    --trials "${TRIALS:-6}" ${TUNE_MODE:+--mode "$TUNE_MODE"} --budget $(( TUNE_S - ${TRIAL_TIMEOUT:-60} - 15 )) --trial-timeout "${TRIAL_TIMEOUT:-60}" ${REFRESH:+--refresh} \
    --storage sqlite:///.tune/studies.db --results 'results/{slug}.yaml' >> "$LOG" 2>&1
  echo "tune: rc $?" | tee -a "$LOG"
  cp .tune/studies.db "$OUT/" 2>/dev/null; cp results/*.yaml "$OUT/res/" 2>/dev/null
fi
if [ "${BENCH_S:-150}" -gt 0 ]; then
  timeout "$BENCH_S" python3 -m eda_tune bench --only "${ONLY:-S1}" --backends "${BENCH_BACKENDS:-triton,fla_gdp,fla_gdr}" \
    ${BENCH_FWD_ONLY:+--fwd-only} ${BENCH_NO_TUNED:+--no-tuned} --out "$OUT/bench" >> "$LOG" 2>&1
  echo "bench: rc $?" | tee -a "$LOG"
fi
if [ "${CHECK_S:-0}" -gt 0 ]; then
  timeout "$CHECK_S" python3 -m eda_tune check ${CHECK_BACKENDS:+--backends "$CHECK_BACKENDS"} ${CHECK_ONLY:+--only "$CHECK_ONLY"} \
    ${CHECK_SHAPES:+--shapes "$CHECK_SHAPES"} \
    --out "$OUT/check" >> "$LOG" 2>&1
  echo "check: rc $?" | tee -a "$LOG"
fi
if [ "${CHECK2_S:-0}" -gt 0 ]; then  # a second check (other backends or shapes); join with `check --merge`
  timeout "$CHECK2_S" python3 -m eda_tune check ${CHECK2_BACKENDS:+--backends "$CHECK2_BACKENDS"} \
    ${CHECK2_ONLY:+--only "$CHECK2_ONLY"} --out "$OUT/check2" >> "$LOG" 2>&1
  echo "check2: rc $?" | tee -a "$LOG"
fi
if [ "${COMPARE:-0}" = 1 ] && [ -f "$OUT/bench/bench.json" ]; then
  # the workflow's last step: this bench against the committed bench and results of the card
  python3 -m eda_tune compare "results/bench/${SLUG}.json" "$OUT/bench/bench.json" --threshold 0.10 \
    --out /tmp/compare/bench >> "$LOG" 2>&1
  echo "compare (bench): rc $?" | tee -a "$LOG"
  python3 -m eda_tune compare "results/${SLUG}.yaml" "$OUT/bench/bench.json" --threshold 0.10 \
    --out /tmp/compare/results >> "$LOG" 2>&1
  echo "compare (results): rc $?" | tee -a "$LOG"
  tar -C /tmp -czf "$OUT/compare.tgz" compare  # one file: at most 8 come back from $OUT
fi
if [ "${COLD_S:-0}" -gt 0 ]; then
  timeout "$COLD_S" python3 benchmarks/tuner_bench.py cold-start --backends "${COLD_BACKENDS:-triton}" \
    --json "$OUT/tuner_cold_start.json" >> "$LOG" 2>&1
  echo "cold start: rc $?" | tee -a "$LOG"
fi
if [ "${EFF_S:-0}" -gt 0 ]; then
  [ -f .tune/eff.db ] || cp "results/studies/${SLUG}-efficiency.db" .tune/eff.db 2>/dev/null
  timeout "$EFF_S" python3 benchmarks/tuner_bench.py efficiency --backend triton --shape S1 \
    --fix "${EFF_FIX:-BK=64,num_stages=2,warps_h=4,segments=1,delta=tm}" --storage sqlite:///.tune/eff.db \
    --budget $(( EFF_S - 40 )) --trial-timeout "${TRIAL_TIMEOUT:-60}" --precompile "${EFF_J:-8}" --json "$OUT/tuner_efficiency.json" >> "$LOG" 2>&1
  echo "efficiency: rc $?" | tee -a "$LOG"
  cp .tune/eff.db "$OUT/" 2>/dev/null
fi
(cd .tcache/triton && find . -name '*.autotune.json' | tar -czf "$OUT/autotune.tgz" -T -) 2>/dev/null
grep -E "^\[|rc |best|S[1-5]|V1|ERROR|Error|passed|failed" "$LOG" | tail -60
