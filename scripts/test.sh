#!/usr/bin/env bash
# The test command (README): set-up, the test suite, then `eda-tune check` of every backend on
# this machine (reports in reports/check). Fails when any test or check fails.
source "$(dirname "$0")/setup.sh"
# the suite over up to 4 worker processes (pytest-xdist; EDA_TUNE_TEST_WORKERS sets the number, 0 runs
# it in this process): CI's two cores take it from about 16 to 11 minutes
WORKERS=${EDA_TUNE_TEST_WORKERS:-$(python -c 'import os; print(min(4, os.cpu_count() or 1))')}
if [ "$WORKERS" -gt 1 ]; then
  python -m pytest -q -p no:cacheprovider -n "$WORKERS" "$@"
else
  python -m pytest -q -p no:cacheprovider "$@"
fi
python -m eda_tune check --out reports/check
