#!/usr/bin/env python3
"""Rerun benchmark: wall time of a no-change `site.yml` on the running lab (`make lab`).

The converged lab is the state a rerun meets in production: every stage runs,
nothing changes. Prints the wall time, the changed count of the recap and the
ten slowest tasks; asserts nothing about time (run it with `make bench`).
Like `make lab` on a running lab, it puts the NIXL polling threads on a small
CPU share while the playbook runs and gives it back afterwards (each idle
NIXL worker busy-polls a core: on a 2-core machine two of them would leave
Ansible almost nothing; docs/serving.md, "Lab notes").
Without a lab it says how to get one and exits 0.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from pdlab import inventory, nodes, pollers  # lab/ on PYTHONPATH (the Makefile's bench target sets it)

ROOT = Path(__file__).resolve().parents[1]

TARGET_S = 45
# Session 7's figure (the lab's 3 hosts, on the shared 2-core machine): kept to print beside today's.
BEFORE_S = float(os.environ.get("PD_RERUN_BEFORE_S", "0") or 0)


def lab_shape() -> tuple[int, int] | None:
    running = nodes.running_nodes()
    counts = {pool: sum(1 for name in running if re.fullmatch(rf"lab-{pool}-\d+", name))
              for pool in inventory.POOLS}
    if not running or not all(counts.values()):
        return None
    return counts["prefill"], counts["decode"]


def recap_changed(output: str) -> dict[str, int]:
    """Host -> changed count from the PLAY RECAP lines."""
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", output, re.M)}


def slowest_tasks(output: str, count: int = 10) -> list[str]:
    """profile_tasks' recap lines (already sorted, slowest first)."""
    recap = output.split("=" * 20)[-1]
    return [line.strip() for line in recap.splitlines() if re.search(r"-+ \d+\.\d+s$", line)][:count]


def main() -> int:
    shape = lab_shape()
    if shape is None:
        print("lab rerun: no lab running (make lab first); figure not measured")
        return 0
    prefill, decode = shape
    args = inventory.inventory_args(prefill, decode)
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    ctl = inventory.load().ctl.name
    vllm_nodes = [name for name in nodes.running_nodes() if name != ctl]
    pollers.deprioritize_nixl_pollers(vllm_nodes)
    try:
        start = time.perf_counter()
        run = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"),
                              str(ROOT / "playbooks" / "site.yml"), *args],
                             capture_output=True, text=True, env=env, cwd=ROOT, check=False)
        elapsed = time.perf_counter() - start
    finally:
        pollers.serve_with_nixl_pollers()
    if run.returncode:
        raise SystemExit(f"site.yml rerun failed (rc {run.returncode}):\n{run.stdout[-3000:]}{run.stderr[-2000:]}")
    if os.environ.get("PD_RERUN_LOG"):  # the whole playbook output, for a closer look
        Path(os.environ["PD_RERUN_LOG"]).write_text(run.stdout)
    changed = recap_changed(run.stdout)
    before = f" (session 7: {BEFORE_S:.0f} s)" if BEFORE_S else ""
    print(f"lab no-change site.yml rerun, {len(changed)} hosts ({prefill} prefill, {decode} decode): "
          f"{elapsed:.1f} s wall, changed={sum(changed.values())} (target <= {TARGET_S} s){before}")
    for line in slowest_tasks(run.stdout):
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
