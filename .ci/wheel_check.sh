#!/usr/bin/env bash
# The package as a user installs it: build the sdist and the wheel (the wheel from the
# sdist, so a file missing from the sdist fails here), install the wheel into a fresh
# virtual environment with the pinned versions, and use it from a directory with no
# source tree: import it, find py.typed, run `vi-entropy reproduce --help` and one tiny run.
#
#   bash .ci/wheel_check.sh          (or `make wheel-check`)
#
# PYTHON builds the distributions (it needs the `build` package, in the `test` extra) and
# creates the fresh environment; default: python3.  CONSTRAINTS=none installs the newest
# versions the registry resolves instead of the pinned ones (constraints.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vi-entropy-wheel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# Nothing of this checkout may leak into the installed environment.
unset PYTHONPATH PYTHONHOME

echo "== wheel check: building the sdist and the wheel"
"$PYTHON" -m build --outdir "$WORK/dist" "$ROOT" >"$WORK/build.log" 2>&1 || {
    cat "$WORK/build.log"
    exit 1
}
# A packaging warning (a deprecated field, a file left out) is a failure here; not the
# notes of a machine's pip configuration or of PYTHONDONTWRITEBYTECODE.
if grep -iE "warn|deprecat" "$WORK/build.log" |
    grep -vE "^WARNING: Location '|byte-compiling is disabled"; then
    echo "wheel check: the build warned (above)" >&2
    exit 1
fi
shopt -s nullglob
wheels=("$WORK"/dist/*.whl)
sdists=("$WORK"/dist/*.tar.gz)
if [[ ${#wheels[@]} -ne 1 || ${#sdists[@]} -ne 1 ]]; then
    echo "wheel check: expected one wheel and one sdist in $WORK/dist" >&2
    ls -l "$WORK/dist" >&2
    exit 1
fi
echo "built: $(basename "${sdists[0]}") $(basename "${wheels[0]}")"

echo "== wheel check: installing the wheel into a fresh virtual environment"
"$PYTHON" -m venv "$WORK/venv"
VPY=$WORK/venv/bin/python
start=$SECONDS
{
    "$VPY" -m pip install --upgrade pip &&
        if [[ ${CONSTRAINTS:-pinned} == none ]]; then
            "$VPY" -m pip install "${wheels[0]}[examples]"
        else
            "$VPY" -m pip install -c "$ROOT/constraints.txt" "${wheels[0]}[examples]"
        fi
} >"$WORK/install.log" 2>&1 || {
    cat "$WORK/install.log"
    exit 1
}
echo "installed in $((SECONDS - start)) s: $("$VPY" -m pip freeze | grep -iE '^(jax|jaxlib|numpyro)==' | tr '\n' ' ')"

mkdir "$WORK/run"
cd "$WORK/run"  # no source tree here: the import must find the installed package
echo "== wheel check: importing the installed package"
"$VPY" - "$WORK/venv" <<'EOF'
import sys
from pathlib import Path

import vi_entropy

venv = Path(sys.argv[1]).resolve()
where = Path(vi_entropy.__file__).resolve()
assert venv in where.parents, f"vi_entropy imported from {where}, not from {venv}"
assert (where.parent / "py.typed").is_file(), f"no py.typed beside {where}"
print(f"vi_entropy {vi_entropy.__version__} from {where.parent}")
EOF

echo "== wheel check: vi-entropy reproduce --help"
"$WORK/venv/bin/vi-entropy" reproduce --help >"$WORK/help.txt"
grep -q -- "--methods" "$WORK/help.txt"

echo "== wheel check: a tiny run on the bundled digits"
# Local entropy by importance sampling (no gradients: a short compilation), two updates;
# a small tau keeps its importance weights healthy at these sizes.
start=$SECONDS
"$WORK/venv/bin/vi-entropy" reproduce --smoke --methods le-is --tau 1e-6 --updates 2 \
    --out "$WORK/run/results" --no-progress
for f in metrics.csv metrics.json table.md config.json accuracy_vs_updates.png \
    draws_le-is_tau1e-06.nc; do
    [[ -s "$WORK/run/results/$f" ]] || {
        echo "wheel check: the run wrote no $f" >&2
        exit 1
    }
done
echo "== wheel check passed (the tiny run: $((SECONDS - start)) s)"
