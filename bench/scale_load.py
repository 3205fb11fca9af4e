#!/usr/bin/env python3
"""Failed requests under a steady load while the lab scales out and back.

    .venv/bin/python bench/scale_load.py [--prefill 2] [--pause 0.5]

Needs a running 1P+1D lab (`make lab`). Runs `labctl up --prefill N` with a
sequential request loop through http://127.0.0.1:8000 (next request --pause
s after each answer), then `labctl up --prefill 1`, and prints served/failed
requests and the wall time of each step. Each step's labctl output (site.yml
with its task timings) is kept in .cache/bench/scale-<step>.log.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from pd_bench.loadgen import Load

ROOT = Path(__file__).resolve().parents[1]


def step(label: str, prefill: int, pause: float) -> int:
    load = Load("http://127.0.0.1:8000", pause=pause)
    load.start()
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(ROOT / "lab" / "labctl.py"), "up", "--prefill", str(prefill)],
                            cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    load.finish()
    log = ROOT / ".cache" / "bench" / f"scale-{label}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(result.stdout + result.stderr)
    print(f"{label:<10} rc {result.returncode}  {wall:6.0f} s  {load.summary()}")
    for failure in load.failed[:10]:
        print(f"           {failure}")
    return result.returncode


def main(argv: list[str]) -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--prefill", type=int, default=2)
    cli.add_argument("--pause", type=float, default=0.5, help="seconds between one answer and the next request")
    opts = cli.parse_args(argv)
    return step("scale-out", opts.prefill, opts.pause) or step("scale-in", 1, opts.pause)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
