#!/usr/bin/env bash
# Overhead and scaling benchmarks on one GPU, in under 8 minutes; JSON (and a PNG) to $OUT.
#
#   bash benchmarks/gpu.sh                    # writes benchmarks/results/gpu/*.json
#   OUT=/tmp/gpu PYTHON=.venv/bin/python bash benchmarks/gpu.sh
#
# Needs a CUDA build of JAX in $PYTHON's environment (pip install -e . "jax[cuda12]").
# Each stage has its own time limit (30 + 200 + 80 + 130 s), so the whole script ends
# within 7.5 minutes even if a stage is slower than expected; the benchmarks write their
# JSON after every row, so a stage cut short keeps what it measured ("complete": false).
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# Allocate GPU memory on demand, so that device peak memory per configuration means
# something (JAX otherwise reserves 75% of the GPU at start-up).
export XLA_PYTHON_CLIENT_PREALLOCATE=false

start=$(date +%s)
echo "== devices"
timeout 30 "$PYTHON" -c "import jax; print(jax.__version__, jax.devices()); assert jax.default_backend() == 'gpu', 'no GPU backend'" || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null | tee "$OUT/nvidia-smi.csv"

status=0
echo "== overhead (~10k and ~100k parameters, all schemes)"
timeout 200 "$PYTHON" benchmarks/overhead.py --sizes 10000 100000 --steps 3 --repeats 5 \
    --out "$OUT/overhead.json" || { echo "overhead: failed or timed out"; status=1; }

echo "== overhead with mini-batches of 256 rows"
timeout 80 "$PYTHON" benchmarks/overhead.py --sizes 100000 --batch-size 256 \
    --schemes LE-SGLD LE-IS HR-SVI --steps 3 --repeats 5 \
    --out "$OUT/overhead-batch256.json" || { echo "overhead (batch): failed or timed out"; status=1; }

echo "== scaling (parameters 10k..3M at 4 chains; chains 1..64 at 100k parameters)"
timeout 130 "$PYTHON" benchmarks/scaling.py --sizes 10000 100000 1000000 3000000 \
    --chains 1 4 16 64 --fixed-size 100000 --repeats 3 \
    --out "$OUT/scaling.json" || { echo "scaling: failed or timed out"; status=1; }

echo "== done in $(( $(date +%s) - start )) s; results in $OUT"
exit $status
