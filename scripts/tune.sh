#!/usr/bin/env bash
# The main job (README): set-up, then tune every available backend for this machine's hardware
# on the embedded default store. Extra arguments go to `eda-tune tune`.
source "$(dirname "$0")/setup.sh"
python -m eda_tune tune "$@"
