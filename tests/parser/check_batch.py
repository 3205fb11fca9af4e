"""Run roles/vllm/files/vllm_check_args.py's main over several argument lists
in one Python process, so vLLM (30-60 s to import on a loaded 2-core machine)
is imported once per release instead of once per list.

    python check_batch.py JOBS.json RESULTS.json

JOBS.json is {name: [checker argument, ...]}; RESULTS.json gets
{name: {"rc": int, "stdout": str, "stderr": str}}, exactly what running the
checker with those arguments would have printed and returned.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
from pathlib import Path

CHECKER = Path(__file__).resolve().parents[2] / "roles" / "vllm" / "files" / "vllm_check_args.py"


def main(jobs_file: str, results_file: str) -> int:
    spec = importlib.util.spec_from_file_location("vllm_check_args", CHECKER)
    checker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checker)
    results = {}
    for name, argv in json.loads(Path(jobs_file).read_text()).items():
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = checker.main(argv)
        results[name] = {"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()}
    Path(results_file).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
