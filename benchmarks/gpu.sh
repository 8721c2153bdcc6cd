#!/usr/bin/env bash
# Overhead, scaling and first-run benchmarks on one GPU, in under 8 minutes; JSON to $OUT.
#
#   bash benchmarks/gpu.sh                    # writes benchmarks/results/gpu/*.json
#   OUT=/tmp/gpu PYTHON=.venv/bin/python bash benchmarks/gpu.sh
#   bash benchmarks/gpu.sh --quick            # CPU smoke check: tiny sizes, no GPU needed
#
# Needs a CUDA build of JAX in $PYTHON's environment (pip install -e . "jax[cuda12]").
# Stages and what each writes to $OUT:
#
#   stage                                                        limit  JSON
#   devices (asserts a GPU backend; --quick prints it)        15 + 5 s  nvidia-smi.csv
#   overhead, 10k and 100k parameters, every scheme              150 s  overhead.json
#   overhead, 100k parameters, mini-batches of 256 rows           40 s  overhead-batch256.json
#   scaling, LE-SGLD, parameters 10k..3M at 4 chains              50 s  scaling.json
#   scaling, LE-pCN, chains 2, 8, 32, 128, 256 at 100k            45 s  scaling-pcn.json
#   scaling, LE-NUTS, chains 2, 8, 32, 128, 256 at 100k           75 s  scaling-nuts.json
#   first run, fresh processes, 10 outer steps against naive      60 s  first_run.json
#
# The limits add up to 440 s (the device check's 15 + 5 s included); `timeout -k` kills a
# stage at most 5 s after its limit, so the whole script ends within 475 s (7 min 55 s)
# whatever a stage does.  The benchmarks write their JSON after every row, so a stage cut
# short keeps what it measured ("complete": false); the largest configurations come last.
# On a GPU most of a stage's time is XLA compilation (a fresh process per scaling
# configuration and per first-run case), so the limits are estimates: no GPU run has
# checked them yet.
#
# --quick: every stage at the scripts' own --quick sizes, with fewer schemes (overhead:
# LE-SGLD and LE-pCN; with mini-batches: LE-SGLD and LE-IS) and chains 2 and 8, a shared
# temporary JAX compilation cache, XLA's cheap optimization level (unless XLA_FLAGS is
# set) and limits x5; the backend is printed, not asserted.  Its timings mean nothing: it
# checks that every stage runs and writes its JSON (tests/test_benchmarks.py).
set -uo pipefail
cd "$(dirname "$0")/.."

quick=0
case "${1:-}" in
    --quick) quick=1 ;;
    "") ;;
    *) echo "usage: bash benchmarks/gpu.sh [--quick]" >&2; exit 2 ;;
esac

PYTHON=${PYTHON:-python3}
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# Allocate GPU memory on demand, so that device peak memory per configuration means
# something (JAX otherwise reserves 75% of the GPU at start-up).
export XLA_PYTHON_CLIENT_PREALLOCATE=false

scale=1
if (( quick )); then
    scale=5  # CPU compilation is slower than a GPU's, and the machine may be shared
    # first_run.py's fresh processes compile the same programs (--quick reads the cache).
    if [[ -z "${JAX_COMPILATION_CACHE_DIR:-}" ]]; then
        cache=$(mktemp -d)
        trap 'rm -rf "$cache"' EXIT
        export JAX_COMPILATION_CACHE_DIR=$cache
    fi
    export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
    export XLA_FLAGS=${XLA_FLAGS:-"--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"}
fi

status=0
# stage NAME LIMIT_S ARGS...: run one benchmark under its time limit, note a failure.
stage() {
    local name=$1 limit=$(( $2 * scale )) t0=$SECONDS
    shift 2
    if timeout -k 5 "$limit" "$PYTHON" "$@"; then
        echo "-- $name: $(( SECONDS - t0 )) s (limit $limit s)"
    else
        echo "-- $name: failed or timed out after $(( SECONDS - t0 )) s (limit $limit s)"
        status=1
    fi
}
# Full sizes, or the scripts' own --quick sizes.
if (( quick )); then q=(--quick); else q=(); fi
pick() { if (( quick )); then echo "$2"; else echo "$1"; fi; }

start=$(date +%s)
(( quick )) && echo "(--quick: tiny sizes; the stage titles describe the full run)"
echo "== devices"
if (( quick )); then
    timeout -k 2 60 "$PYTHON" -c "import jax; print(jax.__version__, jax.default_backend(), jax.devices())" || exit 1
else
    timeout -k 2 15 "$PYTHON" -c "import jax; print(jax.__version__, jax.devices()); assert jax.default_backend() == 'gpu', 'no GPU backend'" || exit 1
fi
if command -v nvidia-smi >/dev/null; then
    timeout -k 2 5 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv \
        | tee "$OUT/nvidia-smi.csv"
fi

echo "== overhead (~10k and ~100k parameters, all schemes)"
# shellcheck disable=SC2046  # pick's words are meant to split
stage overhead 150 benchmarks/overhead.py "${q[@]}" $(pick "--sizes 10000 100000 --steps 3 --repeats 5" "--schemes LE-SGLD LE-pCN") \
    --out "$OUT/overhead.json"

echo "== overhead with mini-batches of 256 rows"
# shellcheck disable=SC2046
stage "overhead (batch)" 40 benchmarks/overhead.py "${q[@]}" $(pick "--sizes 100000 --batch-size 256 --schemes LE-SGLD LE-IS HR-SVI --steps 3 --repeats 5" "--batch-size 256 --schemes LE-SGLD LE-IS") \
    --out "$OUT/overhead-batch256.json"

echo "== scaling, LE-SGLD (parameters 10k..3M at 4 chains)"
# shellcheck disable=SC2046
stage scaling 50 benchmarks/scaling.py "${q[@]}" --sweeps params \
    $(pick "--sizes 10000 100000 1000000 3000000 --fixed-chains 4 --repeats 3" "") \
    --out "$OUT/scaling.json"

for stage_args in pcn:LE-pCN:45 nuts:LE-NUTS:75; do
    IFS=: read -r sampler label limit <<< "$stage_args"
    echo "== scaling, $label (chains $(pick "2, 8, 32, 128, 256 at 100k parameters" "2 and 8"))"
    # shellcheck disable=SC2046
    stage "scaling ($label)" "$limit" benchmarks/scaling.py "${q[@]}" \
        --sampler "$sampler" --sweeps chains \
        $(pick "--chains 2 8 32 128 256 --fixed-size 100000 --repeats 3" "--chains 2 8") \
        --out "$OUT/scaling-$sampler.json"
done

echo "== first run (fresh processes)"
# shellcheck disable=SC2046
stage "first run" 60 benchmarks/first_run.py "${q[@]}" $(pick "--steps 10" "") \
    --out "$OUT/first_run.json"

echo "== done in $(( $(date +%s) - start )) s; results in $OUT"
exit $status
