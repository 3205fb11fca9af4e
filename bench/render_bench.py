#!/usr/bin/env python3
"""Render benchmark: every host's files of one 18-host GB200 rack through
playbooks/render.yml (8 prefill + 8 decode trays, one router host, one
monitoring host), wall time of ansible-playbook.

Prints figures; asserts nothing about time (run it with `make bench`).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from pd_bench.inventory import timed_render, write_inventory
from pd_bench.specs import make_spec  # the inventory shapes the tests plan too (lib/pd_bench)

# Measured on this 2-core machine before the bulk render (one module run per
# file, include_role per role and host): kept to print next to today's figure.
BEFORE_RACK_S = float(os.environ.get("PD_RENDER_BEFORE_S", "0") or 0)


def rack_spec() -> dict:
    """An 18-host rack: 8 prefill and 8 decode trays, the router on ctl-01, monitoring on mon-01."""
    spec = make_spec(8, 8)
    spec["hosts"]["mon-01"] = {"address": "10.20.0.6"}
    spec["groups"]["monitoring"] = ["mon-01"]
    return spec


def render_rack() -> tuple[float, int, int]:
    with tempfile.TemporaryDirectory() as tmp:
        inventory = Path(tmp) / "inventory"
        hosts = write_inventory(rack_spec(), inventory)
        elapsed = timed_render(inventory, Path(tmp) / "out")
        files = sum(1 for p in Path(tmp, "out").rglob("*") if p.is_file())
        return elapsed, hosts, files


def main() -> int:
    seconds, hosts, files = render_rack()
    before = f" (before the bulk render: {BEFORE_RACK_S:.0f} s)" if BEFORE_RACK_S else ""
    print(f"render.yml, every file of an {hosts}-host rack ({files} files): {seconds:.1f} s wall "
          f"(target < 60 s){before}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
