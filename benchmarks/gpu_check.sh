#!/usr/bin/env bash
# The GPU check: on a machine with one NVIDIA GPU, in about 8 minutes on an H100,
#   1. the GPU-marked tests (pytest -m gpu: a training step on the GPU, GPU against CPU merges),
#   2. train_bench: Whisper base's shapes at 30 s, bfloat16 autocast, batch 32 (samples/s),
#   3. decode_bench: RTFx (audio seconds / decoding seconds) at batches 16 to 256,
#   4. merge_bench: 10 experts of Whisper base's size, the SVD / Newton-Schulz methods on the GPU,
#      TSV-M also on the CPU,
#   5. the smoke preset end to end with device: cuda (four GPU jobs sharing the GPU),
# and writes every figure to one JSON file, $OUT/gpu_check.json (OUT default: benchmarks/out/gpu).
#
#   bash benchmarks/gpu_wheels.sh          # once, where PyPI is reachable: the wheels into .whl/
#   bash benchmarks/gpu_check.sh           # on the GPU machine, in the repository's root
#
# It downloads nothing: it needs the machine's CUDA PyTorch (python3) and the wheels in .whl/
# (installed with pip --no-index --no-deps into a folder on PYTHONPATH). Whisper base's weights
# are not among them (two 70 MB wheels), so the benchmarks use random weights of its shapes
# (random:base): throughput does not depend on the values, and every hypothesis runs to its
# token bound. Environment: DEVICE (default cuda; cpu checks this script on a CPU), PYTHON
# (default python3), QUICK=1 (small sizes: what a CPU check runs), SKIP_INSTALL=1 (the current
# environment already has everything).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
OUTDIR=${OUT:-benchmarks/out/gpu}
WORK=${WORK:-$(mktemp -d -t speechmerge-gpu-check-XXXX)}
mkdir -p "$OUTDIR" "$WORK"
export PYTHONUNBUFFERED=1
log() { printf '\n=== %s (%s)\n' "$*" "$(date +%T)"; }

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  log "installing the carried wheels"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/speechmerge-site .whl/*.whl
  export PYTHONPATH=/tmp/speechmerge-site:$PWD${PYTHONPATH:+:$PYTHONPATH}
  export PATH=/tmp/speechmerge-site/bin:$PATH
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
"$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "GPUs", torch.cuda.device_count())'
[ "$DEVICE" = cpu ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

if [ "${QUICK:-0}" = 1 ]; then
  TRAIN_BATCH=2; TRAIN_STEPS=2; CONTEXT=5; DEC_N=32; DEC_BATCHES="16 32"; DEC_TOKENS=4
  MERGE_N=2; MERGE_GPU="tsv_m lors"; MERGE_CPU="lors"; SIZE=tiny
else
  TRAIN_BATCH=32; TRAIN_STEPS=10; CONTEXT=30; DEC_N=1024; DEC_BATCHES="16 32 64 128 256"; DEC_TOKENS=16
  MERGE_N=10; MERGE_GPU="iso_c iso_cts tsv_m tsv_m_ns boosted_tsv_m lors lors_lowrank"; MERGE_CPU="tsv_m"; SIZE=base
fi
threads=$(nproc)
status=0
step() {  # run one step; a failed step is recorded and the others still run
  local name=$1; shift
  log "$name"
  local t0=$SECONDS
  if "$@" > >(tee "$OUTDIR/$name.log") 2>&1; then echo "{\"step\": \"$name\", \"ok\": true, \"seconds\": $((SECONDS - t0))}" >> "$WORK/steps.jsonl"
  else status=1; echo "{\"step\": \"$name\", \"ok\": false, \"seconds\": $((SECONDS - t0))}" >> "$WORK/steps.jsonl"; fi
}

step import_model "$PY" -m speechmerge import-model --spec "random:$SIZE" --out "$WORK/model" --max-seconds "$CONTEXT"

if [ "$DEVICE" != cpu ]; then
  step gpu_tests "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_device_placement.py --junitxml "$WORK/gpu_tests.xml"
fi

step train_bench "$PY" benchmarks/train_bench.py --model "$WORK/model" --device "$DEVICE" --precision bfloat16 \
  --batch "$TRAIN_BATCH" --steps "$TRAIN_STEPS" --threads "$threads" --json "$WORK/train.json"

# shellcheck disable=SC2086
step decode_bench "$PY" benchmarks/decode_bench.py --model "$WORK/model" --device "$DEVICE" --noise --n "$DEC_N" \
  --max-seconds "$CONTEXT" --batch-sizes $DEC_BATCHES --orders sorted --dtypes bfloat16 float32 \
  --max-new-tokens "$DEC_TOKENS" --threads "$threads" --json "$WORK/decode.json"

# shellcheck disable=SC2086
step merge_bench_gpu "$PY" benchmarks/merge_bench.py --methods $MERGE_GPU --n "$MERGE_N" --naive none \
  --device "$DEVICE" --threads "$threads" --workdir "$WORK/merge" --keep --json "$WORK/merge_gpu.json"
# shellcheck disable=SC2086
step merge_bench_cpu "$PY" benchmarks/merge_bench.py --methods $MERGE_CPU --n "$MERGE_N" --naive none \
  --device cpu --threads "$threads" --workdir "$WORK/merge" --keep --json "$WORK/merge_cpu.json"

cat > "$WORK/smoke.yaml" <<EOF
device: $DEVICE
gpu: {jobs_per_gpu: 4}
EOF
step smoke "$PY" -m snakemake -s Snakefile --directory "$WORK/smoke" --configfile presets/smoke.yaml "$WORK/smoke.yaml" \
  --cores "$threads" --resources gpu=4

log "figures -> $OUTDIR/gpu_check.json"
"$PY" - "$WORK" "$OUTDIR/gpu_check.json" "$DEVICE" <<'EOF'
import json, pathlib, sys, xml.etree.ElementTree as ET
work, out, device = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
def load(name):
    p = work / name
    return json.loads(p.read_text()) if p.exists() else None
rec = {"device": device, "steps": [json.loads(l) for l in (work / "steps.jsonl").read_text().splitlines()]}
try:
    import torch
    from speechmerge.devices import gpu_info
    if device != "cpu":
        torch.ones(1, device=device)
    rec["gpu"] = gpu_info()
    rec["torch"] = torch.__version__
except Exception as err:  # noqa: BLE001
    rec["gpu"] = f"unavailable: {err}"
xml = work / "gpu_tests.xml"
if xml.exists():
    suite = ET.parse(xml).getroot().find("testsuite") or ET.parse(xml).getroot()
    rec["gpu_tests"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
rec["train"] = load("train.json")
dec = load("decode.json")
if dec:
    rec["decode"] = dec
    rec["decode_best_rtfx"] = max(r["rtfx"] for r in dec["rows"])
rec["merge_gpu"], rec["merge_cpu"] = load("merge_gpu.json"), load("merge_cpu.json")
smoke = [s for s in rec["steps"] if s["step"] == "smoke"]
rec["smoke_seconds"] = smoke[0]["seconds"] if smoke else None
out.write_text(json.dumps(rec, indent=1))
print(json.dumps({k: rec.get(k) for k in ("device", "gpu", "gpu_tests", "decode_best_rtfx", "smoke_seconds")}, indent=1))
print("train samples/s:", (rec["train"] or {}).get("samples_per_s"))
for side in ("merge_gpu", "merge_cpu"):
    for r in (rec[side] or {}).get("rows", []):
        print(side, r["method"], "N", r["n"], "wall s", round(r["stream"].get("wall_s", float("nan")), 2))
EOF
exit $status
