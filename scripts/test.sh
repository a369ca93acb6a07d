#!/usr/bin/env bash
# The test command (README): set-up, the test suite, then `eda-tune check` of every backend on
# this machine (reports in reports/check). Fails when any test or check fails.
source "$(dirname "$0")/setup.sh"
python -m pytest -q -p no:cacheprovider "$@"
python -m eda_tune check --out reports/check
