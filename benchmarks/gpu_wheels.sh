#!/usr/bin/env bash
# Fetch, on a machine with PyPI, the wheels benchmarks/gpu_check.sh needs on a GPU machine that
# has CUDA PyTorch, transformers, peft, pandas, pyarrow, safetensors, sacrebleu, matplotlib,
# pytest and pytest-xdist but no package index: the pinned versions (requirements.lock) of what
# such a machine lacks, as CPython 3.12 manylinux x86-64 wheels, into WHEELS (default .whl/,
# git-ignored). gpu_check.sh installs them with pip --no-index --no-deps.
#
#   bash benchmarks/gpu_wheels.sh            # then carry .whl to the GPU machine
#
# PYTHON_VERSION (default 3.12) must be the GPU machine's Python. The whole folder stays under
# 64 MiB: Whisper base's weights (two 70 MB wheels) are not carried; gpu_check.sh measures with
# random weights of Whisper base's shapes.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-.whl}
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
PY=${PY:-python3}
LOCK=requirements.lock
# the project's own runtime needs that a CUDA PyTorch image usually lacks (snakemake and its
# dependencies, audio decoding, eSpeak NG for the smoke preset's speech, WER)
NAMES=(snakemake snakemake-interface-common snakemake-interface-executor-plugins
  snakemake-interface-logger-plugins snakemake-interface-report-plugins
  snakemake-interface-scheduler-plugins snakemake-interface-storage-plugins
  argparse-dataclass conda-inject ConfigArgParse connection_pool docutils dpath GitPython gitdb smmap
  humanfriendly immutables jsonschema jsonschema-specifications referencing rpds-py nbformat
  fastjsonschema jupyter_core traitlets platformdirs PuLP smart_open tenacity throttler yte pydantic
  pydantic_core annotated-types typing-inspection SQLAlchemy sqlmodel greenlet
  soundfile cffi pycparser soxr espeakng-loader jiwer RapidFuzz)
mkdir -p "$WHEELS"
pins=()
for name in "${NAMES[@]}"; do
  pin=$(grep -i -E "^${name//[-_]/[-_]}==" "$LOCK" | head -1 || true)
  [ -n "$pin" ] || { echo "gpu_wheels: $name is not pinned in $LOCK" >&2; exit 2; }
  pins+=("$pin")
done
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64
  manylinux_2_24_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux_2_35_x86_64 any)
platform_args=()
for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done
for pin in "${pins[@]}"; do
  if ! "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" --implementation cp \
    "${platform_args[@]}" -d "$WHEELS" "$pin" 2>/dev/null; then
    # published as a source distribution only: build its (pure-Python) wheel here
    "$PY" -m pip wheel -q --no-deps -w "$WHEELS" "$pin"
  fi
done
du -sh "$WHEELS"
ls "$WHEELS" | wc -l
