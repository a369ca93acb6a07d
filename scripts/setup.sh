# Sourced by scripts/test.sh and scripts/tune.sh: a virtual environment with eda-tune installed.
# EDA_TUNE_VENV picks its folder (default .venv in the project root).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=${EDA_TUNE_VENV:-$ROOT/.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  python3 -m venv "$VENV"
fi
PY=$VENV/bin/python
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: installing torch (CUDA build)"
    "$PY" -m pip install -q "torch>=2.11"
  else
    # no GPU: the CPU-tested release (a CPU build where the machine keeps one, e.g. our CI)
    echo "setup: installing torch 2.13.0 (no GPU here)"
    "$PY" -m pip install -q "torch==2.13.0"
  fi
fi
stamp=$VENV/.eda-tune-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing eda-tune and its dependencies"
  "$PY" -m pip install -q -e ".[dev]"
  touch "$stamp"
fi
export PATH=$VENV/bin:$PATH
