#!/usr/bin/env bash
# A separate virtualenv with mergekit 0.1.5 (and the project's torch pin) for
# benchmarks/mergekit_bench.py. Kept apart from .venv: mergekit pins its own versions of
# transformers / accelerate, and the project's environment must not change for a benchmark.
#
#     bash benchmarks/mergekit_setup.sh [VENV_DIR]      # default: .venv-mergekit (git-ignored)
#
# Idempotent: does nothing when VENV_DIR already has mergekit 0.1.5. The Whisper architecture
# fix is applied by the benchmark itself (inside this venv only), not here.
set -euo pipefail
VENV="${1:-.venv-mergekit}"
PYTHON_SYS="${PYTHON_SYS:-python3}"
STAMP="$VENV/.mergekit-0.1.5-installed"
if [ -f "$STAMP" ]; then
    echo "mergekit venv ready: $VENV"
    exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON_SYS" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q torch==2.13.0
"$VENV/bin/python" -m pip install -q mergekit==0.1.5
"$VENV/bin/python" -c "import importlib.metadata as m; assert m.version('mergekit') == '0.1.5', m.version('mergekit')"
touch "$STAMP"
echo "mergekit venv ready: $VENV"
