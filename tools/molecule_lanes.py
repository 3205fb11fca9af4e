#!/usr/bin/env python3
"""Run molecule scenarios in lanes: scenarios of one lane run one after the
other, lanes run side by side; a lane stops at its first failure.

    molecule_lanes.py cluster "lint preflight model_weights monitoring nvidia pytest"

Lanes before `--` run in parallel; scenarios after `--` run alone
afterwards. `pytest` in a lane is the pytest suite (`pytest tests`, with the
environment this tool got; its log lists the 15 slowest tests), `lint` is
`make lint`. `make test` runs the CPU-heavy cluster beside
everything else: its NIXL pollers run on a small CPU share (lab/labctl.py),
so the rest gets the CPU they would waste. Each item's output goes to
.cache/molecule/<item>.log; a failed one's last lines are printed, and
pytest's summary line always. Exits 1 if anything failed.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / ".cache" / "molecule"
BIN = Path(sys.executable).parent


def command(item: str) -> list[str]:
    if item == "lint":
        return ["make", "--no-print-directory", "lint"]
    if item == "pytest":
        return [str(BIN / "pytest"), "tests", "--durations=15"]
    return [str(BIN / "molecule"), "test", "-s", item]


def run(scenario: str, results: dict) -> bool:
    log = LOGS / f"{scenario}.log"
    start = time.monotonic()
    argv = command(scenario)
    print(f"== {' '.join([Path(argv[0]).name, *argv[1:]])} (log: {log.relative_to(ROOT)})", flush=True)
    with log.open("w") as out:
        rc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT,
                            cwd=ROOT, check=False).returncode
    elapsed = time.monotonic() - start
    results[scenario] = (rc, elapsed)
    print(f"== {scenario}: {'passed' if rc == 0 else f'FAILED (rc {rc})'} in {elapsed:.0f} s", flush=True)
    if scenario == "pytest":
        print("   pytest| " + log.read_text(errors="replace").rstrip().splitlines()[-1], flush=True)
    if rc != 0:
        tail = log.read_text(errors="replace").splitlines()[-150:]
        print("\n".join(f"   {scenario}| {line}" for line in tail), flush=True)
    return rc == 0


# Lines that say why an item failed: pytest's assertion and summary lines,
# else Ansible's failed tasks. Printed again at the very end, where a CI page
# that shows only the tail of the output still has them.
PYTEST_MARKERS = ("E   ", "FAILED tests", "FAILED molecule", "FAILED ")
ANSIBLE_MARKERS = ("fatal: [", "failed: [", "ERROR! ")


def failure_excerpt(scenario: str, limit: int = 60) -> str:
    lines = (LOGS / f"{scenario}.log").read_text(errors="replace").splitlines()
    why = [line.strip()[:400] for line in lines
           if line.lstrip().startswith(PYTEST_MARKERS) and "FAILED - RETRYING" not in line]
    if not why:
        why = [line.strip()[:400] for line in lines if line.lstrip().startswith(ANSIBLE_MARKERS)][-limit:]
    return "\n".join([f"== why {scenario} failed ({min(limit, len(why))} of {len(why)} lines):",
                      *(f"   {scenario}! {line}" for line in why[:limit])])


def lane(scenarios: list[str], results: dict) -> None:
    for scenario in scenarios:
        if not run(scenario, results):
            return


def main(argv: list[str]) -> int:
    LOGS.mkdir(parents=True, exist_ok=True)
    split = argv.index("--") if "--" in argv else len(argv)
    lanes = [lane_spec.split() for lane_spec in argv[:split]]
    after = argv[split + 1:]
    results: dict[str, tuple[int, float]] = {}
    threads = [threading.Thread(target=lane, args=(names, results)) for names in lanes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if all(rc == 0 for rc, _ in results.values()):
        for scenario in after:
            if not run(scenario, results):
                break
    wanted = [s for names in lanes for s in names] + after
    for scenario, (rc, _elapsed) in results.items():
        if rc != 0:
            print(failure_excerpt(scenario), flush=True)
    print("== lanes: " + ", ".join(
        f"{s} {'ok' if results[s][0] == 0 else 'FAILED'} {results[s][1]:.0f} s" if s in results else f"{s} not run"
        for s in wanted), flush=True)
    return 0 if all(s in results and results[s][0] == 0 for s in wanted) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
