#!/usr/bin/env bash
# A non-editable install (make test-install): `pip install .` into a new virtualenv (dependencies
# from requirements.lock), then the smoke preset with a copy of the workflow files only (Snakefile,
# rules, scripts, configs, envs; no library, schema or corpus beside them) from another directory. So
# the schema and the corpus can only come from the installed package (importlib.resources).
#   tests/install/non_editable.sh         # KEEP=1 keeps the scratch directory
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PYTHON=${PYTHON_SYS:-python3}
WORK=$(mktemp -d /tmp/speechmerge-install.XXXXXX)
cleanup() { if [ "${KEEP:-0}" = 1 ]; then echo "non_editable: kept $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT

"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q --upgrade pip
"$WORK/venv/bin/pip" install -q -r "$REPO/requirements.lock"
"$WORK/venv/bin/pip" install -q --no-deps "$REPO"
mkdir -p "$WORK/workflow" "$WORK/elsewhere"
cp -r "$REPO/Snakefile" "$REPO/config.yaml" "$REPO/rules" "$REPO/workflow_scripts" "$REPO/presets" "$REPO/docs" "$REPO/envs" \
    "$WORK/workflow/"
cd "$WORK/elsewhere"
"$WORK/venv/bin/python" - <<'PY'
import speechmerge
from speechmerge.config import CORPUS, SCHEMA
for path in (speechmerge.__file__, CORPUS, SCHEMA):
    assert "site-packages" in str(path), f"{path} is not in the installed package"
    print("non_editable: installed", path)
PY
t0=$(date +%s)
"$WORK/venv/bin/snakemake" --snakefile "$WORK/workflow/Snakefile" --directory "$WORK/elsewhere" --cores 2 \
    --configfile "$WORK/workflow/presets/smoke.yaml" > "$WORK/run.log" 2>&1 \
    || { tail -30 "$WORK/run.log"; echo "non_editable: the smoke run failed" >&2; exit 1; }
for exp in multilingual domains peft; do
    [ -s "results/report/$exp/table.md" ] || { echo "non_editable: no results/report/$exp/table.md" >&2; exit 1; }
done
echo "non_editable: smoke preset from $WORK/elsewhere in $(( $(date +%s) - t0 )) s; tables written; OK"
