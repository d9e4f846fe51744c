#!/usr/bin/env bash
# The GPU check of the paper profile in one call: install the carried wheels offline, measure
# (benchmarks/gpu.py), then check end to end (benchmarks/gpu_e2e.py). Every log and the JSON
# land in one folder: $OUT when set (the device tool brings it back), else a new temporary one.
#
#   bash benchmarks/gpu.sh          # on a GPU machine: 512 px, the paper profile's batches
#   bash benchmarks/gpu.sh --cpu    # the CPU rehearsal: 32 px, a few iterations, one thread
#
# Wheels: with .whl/*.whl present (python -m benchmarks.gpu_wheels puts them there), they and
# this tree are installed offline with --no-deps into $SITE, first on PYTHONPATH, so the
# interpreter's own torch is used; without .whl/ the interpreter's installed packages are used.
# Environment: PYTHON (python3), WHEELS (.whl), SITE (/tmp/spinebench-site), the time limits
# BENCH_TIMEOUT (330 s) and E2E_TIMEOUT (170 s) (with --cpu: BENCH_TIMEOUT_CPU, 1800 s, and
# E2E_TIMEOUT_CPU, 900 s), SKIP_BENCH=1, SKIP_E2E=1, BENCH_ARGS and E2E_ARGS (extra arguments).
# Files in $OUT (at most 8, which is what the device tool brings back): install.log, env.txt,
# gpu-<date>.json, gpu.log, e2e.json, e2e.log, summary.txt.
set -u -o pipefail
cd "$(dirname "$0")/.."
MODE=gpu BENCH_TIMEOUT=${BENCH_TIMEOUT:-330} E2E_TIMEOUT=${E2E_TIMEOUT:-170}
if [ "${1:-}" = "--cpu" ]; then
  MODE=cpu BENCH_TIMEOUT=${BENCH_TIMEOUT_CPU:-1800} E2E_TIMEOUT=${E2E_TIMEOUT_CPU:-900}
fi
OUT=${OUT:-$(mktemp -d /tmp/spinebench-gpu-XXXXXX)}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
DATE=$(date -u +%Y-%m-%d)
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export HF_HUB_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false
scratch=() # temporary folders this script made, removed on exit
trap 'rm -rf "${scratch[@]}"' EXIT
if [ -z "${SPINEBENCH_CACHE:-}" ]; then
  SPINEBENCH_CACHE=$(mktemp -d /tmp/spinebench-gpu-cache-XXXXXX)
  scratch+=("$SPINEBENCH_CACHE")
fi
export SPINEBENCH_CACHE
summary() { echo "$*" | tee -a "$OUT/summary.txt"; }
: > "$OUT/summary.txt"
summary "benchmarks/gpu.sh ($MODE) $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo none)"
failed=0

# 1. the carried wheels and this tree, offline
t0=$SECONDS
WHEELS=${WHEELS:-.whl}
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  SITE=${SITE:-/tmp/spinebench-site}
  src=$(mktemp -d /tmp/spinebench-src-XXXXXX) # built from a copy: the tree stays as it is
  scratch+=("$src")
  rm -rf "$SITE"
  if ! {
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" "$WHEELS"/*.whl &&
      tar --exclude=./.venv --exclude=./.whl --exclude=./.git --exclude=./build -cf - . |
      tar -xf - -C "$src" &&
      "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir \
        --upgrade --target "$SITE" "$src"
  } >"$OUT/install.log" 2>&1; then
    summary "install: FAILED ($((SECONDS - t0)) s); see install.log"
    tail -20 "$OUT/install.log"
    exit 2
  fi
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  summary "install: $(ls "$WHEELS"/*.whl | wc -l) wheels and spinebench into $SITE ($((SECONDS - t0)) s)"
else
  echo "no wheels in $WHEELS/: using the packages installed for $PY" >"$OUT/install.log"
  summary "install: none (no wheels in $WHEELS/)"
fi

# 2. what the machine has
{
  nvidia-smi 2>&1 || echo "no nvidia-smi"
  "$PY" - <<'EOF'
import platform, sys
import spinebench.engine.run, spinebench.predict
from spinebench import plugins
print("methods", sorted(plugins.methods()), "datasets", sorted(plugins.datasets()))
for name in ("SimpleITK", "open_clip", "mlflow"):
    print(name, "imported with the engine, predict and the plugins:", name in sys.modules)
import torch
print("python", platform.python_version(), sys.executable)
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), "nccl", torch.cuda.nccl.version())
for name in ("mlflow", "sqlalchemy", "alembic", "monai", "nibabel", "transformers", "timm", "numpy"):
    try:
        module = __import__(name)
        print(name, getattr(module, "__version__", "?"), module.__file__)
    except Exception as exc:
        print(name, "NOT IMPORTABLE:", type(exc).__name__, exc)
from spinebench.models.tokenizer import clip_bpe_path
print("CLIP BPE file", clip_bpe_path(), clip_bpe_path().is_file())
EOF
  "$PY" -m spinebench list methods
  "$PY" -m pip check
} >"$OUT/env.txt" 2>&1
summary "env: $(grep -E '^(torch|device) ' "$OUT/env.txt" | tr '\n' ' ')"

# 3. the measurements
if [ "${SKIP_BENCH:-0}" != 1 ]; then
  t0=$SECONDS
  if [ "$MODE" = cpu ]; then
    args=(--device cpu --image-size 32 --iterations 2 --warmup 1 --cases 8 --vlm small
      --vlm-size 32 --no-compile --threads 1 --budget-s "$BENCH_TIMEOUT")
  else
    args=(--device cuda)
  fi
  # shellcheck disable=SC2086
  timeout -k 15 "$BENCH_TIMEOUT" "$PY" -m benchmarks.gpu "${args[@]}" \
    --out "$OUT/gpu-$DATE.json" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/gpu.log"
  code=$?
  [ $code = 0 ] || failed=1
  summary "bench: exit $code ($((SECONDS - t0)) s), $OUT/gpu-$DATE.json"
fi

# 4. end to end: cps4 run, predict, torchrun with the process group
if [ "${SKIP_E2E:-0}" != 1 ]; then
  t0=$SECONDS
  if [ "$MODE" = cpu ]; then
    args=(--device cpu --image-size 32 --cases 8 --iterations 2 --threads 1)
  else
    args=(--device cuda)
  fi
  # shellcheck disable=SC2086
  timeout -k 15 "$E2E_TIMEOUT" "$PY" -m benchmarks.gpu_e2e "${args[@]}" --out "$OUT" \
    --budget-s $((E2E_TIMEOUT - 10)) ${E2E_ARGS:-} 2>&1 | tail -40
  code=$?
  [ $code = 0 ] || failed=1
  summary "e2e: exit $code ($((SECONDS - t0)) s), $OUT/e2e.json"
fi
summary "files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exit $failed
