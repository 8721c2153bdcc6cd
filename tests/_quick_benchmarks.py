"""Run several ``benchmarks/*.py`` in one fresh interpreter, each as ``python SCRIPT ARGS``.

``python tests/_quick_benchmarks.py OUT JOBS``: ``JOBS`` is a JSON list of ``[name,
script, args]``.  Each script runs as ``__main__`` (``runpy``), with ``sys.argv`` set
as the command line sets it; its standard output goes to ``OUT/name.stdout``, and a
failure's traceback to ``OUT/name.error`` (the next job runs all the same); the seconds
each took, to standard error.  One
interpreter pays for the imports and the eager compilations once, for every script.
"""

from __future__ import annotations

import contextlib
import json
import runpy
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    out, jobs = Path(sys.argv[1]), json.loads(sys.argv[2])
    sys.path.insert(0, str(ROOT / "benchmarks"))  # as `python benchmarks/x.py` has it
    for name, script, args in jobs:
        path = str(ROOT / "benchmarks" / script)
        sys.argv = [path, *args]
        start = time.perf_counter()
        with open(out / f"{name}.stdout", "w") as stdout, contextlib.redirect_stdout(stdout):
            try:
                runpy.run_path(path, run_name="__main__")
            except BaseException:  # noqa: BLE001 - reported to the test, which fails
                (out / f"{name}.error").write_text(traceback.format_exc())
        print(f"{name}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
