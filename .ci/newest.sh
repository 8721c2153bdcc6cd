#!/usr/bin/env bash
# The Python most users have: the newest interpreter this machine has (3.12 or later),
# with the newest versions the package registry resolves (no constraints), runs the wheel
# check and a smoke subset of the test suite.  Skipped, with a line saying so, where no
# such interpreter exists.  .ci/run calls it after `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
newest=""
for v in 3.14 3.13 3.12; do
    for candidate in "$(command -v "python$v" 2>/dev/null || true)" \
        $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/python 2>/dev/null | sort -V -r); do
        # (a pyenv shim exists for every version pyenv has, but runs only the selected one)
        if [[ -n $candidate && -x $candidate ]] && "$candidate" -c "import venv" 2>/dev/null; then
            newest=$candidate
            break 2
        fi
    done
done
if [[ -z $newest ]]; then
    echo "newest Python: none of 3.12-3.14 on this machine; skipped"
    exit 0
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vi-entropy-newest.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
echo "== newest Python: $("$newest" --version) ($newest), unpinned versions"
"$newest" -m venv "$WORK/venv"
VPY=$WORK/venv/bin/python
{
    "$VPY" -m pip install --upgrade pip && "$VPY" -m pip install -e "$ROOT[test]"
} >"$WORK/install.log" 2>&1 || {
    cat "$WORK/install.log"
    exit 1
}
echo "resolved: $("$VPY" -m pip freeze | grep -iE '^(jax|jaxlib|numpy|numpyro|optax|arviz)==' | tr '\n' ' ')"
CONSTRAINTS=none PYTHON=$VPY bash .ci/wheel_check.sh
# A smoke subset: models through both schemes, the ArviZ export (ArviZ 1.x here), the
# inputs' checks, the benchmark's metrics and protocol (its --quick run).
"$VPY" -m pytest -q -p no:cacheprovider -o addopts="-ra" \
    tests/test_run.py tests/test_arviz.py tests/test_inputs.py tests/test_benchmark.py
