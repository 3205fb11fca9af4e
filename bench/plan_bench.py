#!/usr/bin/env python3
"""Planner benchmark: time to plan GB200 inventories of growing size, in-process.

Prints figures; asserts nothing about time (run it with `make bench`).
Layout per size: half the trays prefill (2-GPU DP2+EP instances, two per
tray), half decode (8-GPU DP8+EP instances spanning two trays), like the
gb200 sample, plus one router/monitoring host.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from pd_bench.inventory import timed_render, write_inventory
from pd_bench.specs import make_spec
from pd_planner import build_plan

SIZES = (36, 72, 144, 288)
REPEATS = 7


def measure(trays: int) -> tuple[float, dict]:
    spec = make_spec(trays // 2, trays // 2, cluster_cidr="10.20.0.0/16")
    timings = []
    plan = {}
    for _ in range(REPEATS):
        start = time.perf_counter()
        plan = build_plan(spec)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings), plan


def render_through_ansible(trays: int, render_hosts: str = "") -> float:
    """Wall time of render.yml on a generated inventory: hostvars, the
    planner, plan.json and the files of `render_hosts` (none by default)."""
    with tempfile.TemporaryDirectory() as tmp:
        inventory = Path(tmp) / "inventory"
        write_inventory(make_spec(trays // 2, trays // 2), inventory)
        return timed_render(inventory, Path(tmp) / "out", f"render_hosts={render_hosts}")


def main() -> int:
    print(f"{'trays':>6} {'GPUs':>6} {'instances':>9} {'median s':>9} {'ms/tray':>8}")
    results = {}
    for trays in SIZES:
        seconds, plan = measure(trays)
        results[trays] = seconds
        print(f"{trays:>6} {trays * 4:>6} {len(plan['instances']):>9} {seconds:>9.4f} {seconds / trays * 1000:>8.3f}")
    growth = results[SIZES[-1]] / results[SIZES[0]]
    print(f"time({SIZES[-1]}) / time({SIZES[0]}) = {growth:.2f} for {SIZES[-1] / SIZES[0]:.0f}x the trays "
          "(linear would be 8.00)")
    print(f"288 trays: {results[288]:.3f} s (target < 0.5 s)")
    plan_only = render_through_ansible(288)
    print(f"render.yml through ansible-playbook, 288 trays, plan only: {plan_only:.1f} s wall "
          "(process start, inventory load, pd_plan over hostvars, plan.json)")
    # A host's files cost one module run per file: measured on three hosts
    # (one of each kind), not all 289.
    sample = render_through_ansible(288, "prefill-tray-000,decode-tray-000,ctl-01")
    print(f"render.yml, 288 trays, files of prefill-tray-000, decode-tray-000 and ctl-01: {sample:.1f} s wall, "
          f"{(sample - plan_only) / 3:.1f} s per host rendered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
