#!/usr/bin/env python3
"""Failed requests under a steady load while the lab scales out and back.

    .venv/bin/python bench/scale_load.py [--prefill 2]

Needs a running 1P+1D lab (`make lab`). Runs `labctl up --prefill N` with a
request loop through http://127.0.0.1:8000, then `labctl up --prefill 1`,
and prints served/failed requests and the wall time of each step.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import Load

ROOT = Path(__file__).resolve().parents[1]


def step(label: str, prefill: int) -> int:
    load = Load("http://127.0.0.1:8000")
    load.start()
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(ROOT / "lab" / "labctl.py"), "up", "--prefill", str(prefill)],
                            cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    load.finish()
    print(f"{label:<10} rc {result.returncode}  {wall:6.0f} s  {load.summary()}")
    for failure in load.failed[:10]:
        print(f"           {failure}")
    return result.returncode


def main(argv: list[str]) -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--prefill", type=int, default=2)
    opts = cli.parse_args(argv)
    return step("scale-out", opts.prefill) or step("scale-in", 1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
