#!/usr/bin/env python3
"""Render benchmark: every host's files of one 18-host GB200 rack through
playbooks/render.yml (8 prefill + 8 decode trays, one router host, one
monitoring host), wall time of ansible-playbook.

Prints figures; asserts nothing about time (run it with `make bench`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from pd_bench.specs import make_spec  # the inventory shapes the tests plan too (lib/pd_bench)

ROOT = Path(__file__).resolve().parents[1]

# Measured on this 2-core machine before the bulk render (one module run per
# file, include_role per role and host): kept to print next to today's figure.
BEFORE_RACK_S = float(os.environ.get("PD_RENDER_BEFORE_S", "0") or 0)


def rack_inventory(directory: Path) -> int:
    """Write an 18-host rack inventory under `directory`; return its host count."""
    spec = make_spec(8, 8)
    shutil.copytree(ROOT / "inventories" / "gb200" / "group_vars", directory / "group_vars")
    (directory / "group_vars" / "all" / "network.yml").write_text("pd_cluster_cidr: 10.20.0.0/16\n")
    # The rack's IMEX domain lists every tray (docs/gb200-layout.md): here the 16 serving ones.
    platform = directory / "group_vars" / "all" / "platform.yml"
    settings = yaml.safe_load(platform.read_text())
    trays = [spec["hosts"][h]["address"] for g, hosts in spec["groups"].items()
             if g in ("prefill", "decode") for h in hosts]
    settings["pd_imex_domains"] = {settings["pd_imex_domain"]: trays}
    platform.write_text(yaml.safe_dump(settings, sort_keys=False))
    children = {group: {"hosts": {h: {"pd_address": spec["hosts"][h]["address"]} for h in hosts}}
                for group, hosts in spec["groups"].items() if group not in ("router", "monitoring")}
    children["router"] = {"hosts": {"ctl-01": {"pd_address": "10.20.0.5"}}}
    children["monitoring"] = {"hosts": {"mon-01": {"pd_address": "10.20.0.6"}}}
    (directory / "hosts.yml").write_text(json.dumps({"all": {"children": children}}, indent=1))
    return sum(len(g["hosts"]) for g in children.values())


def render_rack() -> tuple[float, int, int]:
    with tempfile.TemporaryDirectory() as tmp:
        inventory = Path(tmp) / "inventory"
        hosts = rack_inventory(inventory)
        env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
        start = time.perf_counter()
        run = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"),
                              str(ROOT / "playbooks/render.yml"), "-i", str(inventory),
                              "-e", f"render_dir={tmp}/out"],
                             capture_output=True, text=True, env=env, cwd=ROOT, check=False)
        elapsed = time.perf_counter() - start
        if run.returncode:
            raise SystemExit(f"render.yml failed:\n{run.stdout[-3000:]}{run.stderr[-3000:]}")
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
