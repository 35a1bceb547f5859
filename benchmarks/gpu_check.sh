#!/usr/bin/env bash
# The GPU checks of panchro in one run, on a fresh CUDA (or ROCm) machine, in under 8 minutes.
#
#   bash benchmarks/gpu_check.sh              # from anywhere; writes to $OUT if set
#   bash benchmarks/gpu_check.sh --dry-run    # say what would run, run nothing heavy
#   bash benchmarks/gpu_check.sh --budget 300 # seconds for the whole run (default 450)
#
# Steps, each under its own time limit and all under the budget (a step that would not fit
# is skipped and said so):
#   1. the GPU: nvidia-smi (or rocm-smi); no GPU -> "no GPU", exit 0 within seconds
#   2. a virtual environment: the python3 that has torch is reused through
#      --system-site-packages (plus a .pth to its own site-packages when python3 is itself
#      a venv); `pip install -e '.[test]'` when PyPI answers, else the checkout on
#      PYTHONPATH (the cuda tests need only torch, numpy and pytest); torch from PyPI only
#      where none is importable
#   3. the tests marked `cuda` (colour work on the GPU equal to numpy within 1 level,
#      the real out-of-memory ladder, fp16/bf16 against fp32, device pinning), with -s so
#      their measurements print; conftest-free, so torch, numpy and pytest suffice
#   4. benchmarks/colour_ops.py: colour work numpy (host) vs torch (GPU), 3 MP scans
#   5. benchmarks/gpu_pipeline.py: images/s end to end per precision and colour work, VRAM
#      by input size and by scan size
#   6. benchmarks/model.py: the network alone, large model, 512 and 1024 px, 3 precisions
#   7. benchmarks/batching.py: images/s at batch sizes 1, 4 and 8, large model, 512 px, fp16
# Output: one file per step and gpu_check.log under $OUT (or the work folder), a summary
# last. Exit status: 0 when every step ran and passed or there is no GPU, 1 otherwise.
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUDGET=450
DRY_RUN=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --budget) BUDGET="$2"; shift ;;
    -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

WORK="${GPU_CHECK_WORK:-${TMPDIR:-/tmp}/panchro-gpu-check}"
RESULTS="${OUT:-$WORK/out}"
mkdir -p "$WORK" "$RESULTS"
LOG="$RESULTS/gpu_check.log"
: >"$LOG"
STARTED=$(date +%s)
FAILED=0
SUMMARY=()
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT" || exit 2

say() { echo "gpu_check: $*" | tee -a "$LOG"; }
left() { echo $((BUDGET - ($(date +%s) - STARTED))); }

# step NAME CAP_SECONDS FILE COMMAND...: run under min(CAP, budget left - 5 s), tee to FILE.
step() {
  local name="$1" cap="$2" file="$3"; shift 3
  local limit; limit=$(left); limit=$((limit - 5)); [ "$cap" -lt "$limit" ] && limit=$cap
  if [ "$limit" -lt 20 ]; then
    say "$name: SKIPPED, only $(left) s of the budget left"
    SUMMARY+=("$name: skipped (budget)"); FAILED=1; return 0
  fi
  say "$name: $* (limit ${limit} s)"
  if [ "$DRY_RUN" = 1 ]; then SUMMARY+=("$name: dry run"); return 0; fi
  local began; began=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$RESULTS/$file" >>"$LOG"
  local status=${PIPESTATUS[0]}
  local took=$(($(date +%s) - began))
  case "$status" in
    0) SUMMARY+=("$name: ok in ${took} s") ;;
    124|137) SUMMARY+=("$name: TIMED OUT after ${took} s"); FAILED=1 ;;
    *) SUMMARY+=("$name: FAILED (exit $status) in ${took} s"); FAILED=1 ;;
  esac
  say "$name: exit $status after ${took} s"
}

finish() {
  {
    echo "== summary ($(($(date +%s) - STARTED)) s of a ${BUDGET} s budget)"
    printf '  %s\n' "${SUMMARY[@]}"
  } | tee "$RESULTS/summary.txt" | tee -a "$LOG"
  say "outputs in $RESULTS"
  exit "$FAILED"
}

# 1. The GPU, asked of the driver's tool: no torch import, so "no GPU" comes in seconds.
GPU_TOOL=""
if command -v nvidia-smi >/dev/null 2>&1 && timeout 20 nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
  GPU_TOOL="nvidia-smi"
elif command -v rocm-smi >/dev/null 2>&1 && timeout 20 rocm-smi --showproductname >/dev/null 2>&1; then
  GPU_TOOL="rocm-smi"
fi
if [ -z "$GPU_TOOL" ]; then
  say "no GPU: neither nvidia-smi nor rocm-smi lists one here; nothing to check"
  SUMMARY+=("gpu: no GPU, nothing checked")
  [ "$DRY_RUN" = 1 ] || finish
  say "dry run: the plan on a GPU machine follows"
  GPU_TOOL="nvidia-smi"
fi
step "gpu" 30 env.txt bash -c "$GPU_TOOL; date -u; nproc; free -g; uname -a"

# 2. The Python environment.
PY="${PYTHON:-python3}"
VENV="$WORK/venv"
if [ "$DRY_RUN" = 1 ]; then
  say "venv: would create $VENV from $PY and install the project"
  SUMMARY+=("venv: dry run")
else
  if "$PY" -c "import torch" >/dev/null 2>&1; then
    if "$PY" -m venv --system-site-packages "$VENV" >>"$LOG" 2>&1; then
      # A python3 that is itself a venv hides its packages from --system-site-packages.
      PARENT_SITE=$("$PY" -c "import site; print('\n'.join(site.getsitepackages()))")
      VENV_SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
      echo "$PARENT_SITE" >"$VENV_SITE/_gpu_check_parent.pth"
      say "venv: $VENV over $("$PY" -c 'import sys; print(sys.prefix)') (torch reused)"
      PY="$VENV/bin/python"
    else
      say "venv: cannot be made here; installing into $PY's own environment"
    fi
  else
    "$PY" -m venv "$VENV" >>"$LOG" 2>&1 && PY="$VENV/bin/python"
    step "torch_install" 240 torch_install.txt "$PY" -m pip install -q torch
  fi
  if "$PY" - <<'EOF' >/dev/null 2>&1
import os, urllib.request
index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
urllib.request.urlopen(index + "/pip/", timeout=5)
EOF
  then
    step "install" 180 install.txt "$PY" -m pip install -q -e '.[test]'
  else
    say "install: the package index does not answer; the checkout is used from PYTHONPATH"
    SUMMARY+=("install: none (no package index); torch, numpy and pytest of $PY")
  fi
fi

if [ "$DRY_RUN" = 0 ] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  say "no GPU visible to torch ($("$PY" -c 'import torch; print(torch.__version__)' 2>&1)), \
although $GPU_TOOL lists one; nothing else checked"
  SUMMARY+=("torch: sees no GPU"); FAILED=1
  finish
fi
step "torch" 60 torch.txt "$PY" -c "
import torch, numpy
print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'HIP', torch.version.hip,
      'numpy', numpy.__version__)
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f'cuda:{i}', p.name, f'{p.total_memory / 2**30:.0f} GiB', 'bf16',
          torch.cuda.is_bf16_supported())
"

# 3.-6. Tests first, then the tables, most telling first.
step "tests" 150 tests.txt "$PY" -m pytest -m cuda -s -q -rs -p no:cacheprovider --noconftest \
  tests/ddcolor/test_cuda.py tests/workers/test_cuda_pinning.py
step "colour_ops" 90 colour_ops.txt "$PY" benchmarks/colour_ops.py --device cuda:0 --rounds 5
step "pipeline" 150 pipeline.txt "$PY" benchmarks/gpu_pipeline.py --device cuda:0 --images 5
step "model" 100 model.txt "$PY" benchmarks/model.py --device cuda:0 --arch large --size 512 \
  --size 1024 --precision fp16 --precision bf16 --precision fp32 --repeat 10
step "batching" 60 batching.txt "$PY" benchmarks/batching.py --device cuda:0 --precision fp16 \
  --model large --batch 1 --batch 4 --batch 8 --images 16 --rounds 2
finish
