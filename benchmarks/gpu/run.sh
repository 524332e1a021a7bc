#!/usr/bin/env bash
# The prepared GPU check (issue 30 item 6), one entry point, under 8 minutes: on the device machine,
#   bash benchmarks/gpu/run.sh            (the device tool's run, carry: ["benchmarks/gpu/wheels"], timeout_s 560)
# Sets up a venv over the machine's Python 3.12 + torch (CUDA) + timm + scikit-image (--system-site-packages), installs
# the wheels carried in benchmarks/gpu/wheels (fetch_wheels.sh, run beforehand where PyPI is reachable) and the project
# without dependencies, then runs each part of benchmarks/gpu/check.py in its own process under its own timeout.
# Results: $OUT/gpu_check.json, $OUT/gpu_check.md, $OUT/gpu_check.log (OUT defaults to benchmarks/gpu/results/local).
# Environment: GPU_CHECK_BUDGET (seconds for everything, default 465), GPU_CHECK_ARGS (extra check.py arguments,
# e.g. "--device cpu --tiny" for a dry run on a machine without a GPU), PYTHON (default python3), GPU_CHECK_VENV
# (default /tmp/gpu-check-venv; none: use PYTHON as it is, installing nothing).
set -u
cd "$(dirname "$0")/../.."
START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET:-465}
OUT=${OUT:-benchmarks/gpu/results/local}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
PARTS_DIR=$(mktemp -d /tmp/gpu-check-parts.XXXX)
PY=${PYTHON:-python3}
exec > >(tee -a "$LOG") 2>&1
echo "== gpu check $(date -u +%FT%TZ) on $(hostname); budget ${BUDGET}s"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

# --- environment: the machine's packages + carried wheels + this project (no dependency resolution, no network)
VENV=${GPU_CHECK_VENV:-/tmp/gpu-check-venv}
if [ "$VENV" = none ]; then  # a dry run in an environment that has everything (PYTHON=.venv/bin/python)
    PYEXE=$PY
else
    PYEXE=python
    "$PY" -m venv --system-site-packages "$VENV" && . "$VENV/bin/activate" || { echo "venv failed: $PY as is"; PYEXE=$PY; }
    shopt -s nullglob
    wheels=(benchmarks/gpu/wheels/*.whl)
    if ((${#wheels[@]})); then
        "$PYEXE" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir "${wheels[@]}" ||
            echo "wheel install failed"
    else
        echo "no wheels in benchmarks/gpu/wheels (run benchmarks/gpu/fetch_wheels.sh first and carry the folder)"
    fi
    "$PYEXE" -m pip install -q --no-index --no-deps --no-build-isolation -e . >/dev/null 2>&1 ||
        echo "editable install failed: PYTHONPATH only"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PYEXE" - <<'PY'
import importlib
for m in ("torch", "open_clip", "timm", "nuscenes.nuscenes", "pyquaternion", "ftfy", "skimage", "yaml", "pytest"):
    try:
        mod = importlib.import_module(m)
        print(f"  {m:18s} {getattr(mod, '__version__', 'ok')}")
    except Exception as e:
        print(f"  {m:18s} MISSING: {type(e).__name__}: {e}")
import torch
print("  cuda:", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY

# --- the parts, each under its own timeout, never past the total budget (seconds: tests, suite, students, losses)
notes=()
run_part() {  # run_part NAME SECONDS [extra check.py arguments]
    local name=$1 limit=$2; shift 2
    local left=$((BUDGET - ($(date +%s) - START) - 15))
    ((limit > left)) && limit=$left
    if ((limit < 10)); then
        echo "== $name: not run (budget spent)"; notes+=(--note "$name=124"); return
    fi
    echo "== $name (timeout ${limit}s)"
    # shellcheck disable=SC2086
    timeout --kill-after=10 "$limit" "$PYEXE" benchmarks/gpu/check.py --part "$name" --parts-dir "$PARTS_DIR" \
        ${GPU_CHECK_ARGS:-} "$@"
    local rc=$?
    notes+=(--note "$name=$rc")
    echo "== $name exit $rc after $(($(date +%s) - START))s in all"
}
run_part tests 110 --tests-timeout 95
run_part suite 210 --loop-budget 100
run_part students 80
run_part losses 45
# shellcheck disable=SC2086
"$PYEXE" benchmarks/gpu/check.py --merge --parts-dir "$PARTS_DIR" --out "$OUT" ${GPU_CHECK_ARGS:-} "${notes[@]}" |
    tail -n +1 >/dev/null
cat "$OUT/gpu_check.md" 2>/dev/null
echo "== done in $(($(date +%s) - START))s: $OUT/gpu_check.json"
