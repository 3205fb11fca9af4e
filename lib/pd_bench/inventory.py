"""A real Ansible inventory for a spec of pd_bench.specs.make_spec, and a
timed render.yml over it (bench/plan_bench.py, bench/render_bench.py).

The inventory takes the gb200 sample's group_vars, the spec's cluster
network, one IMEX domain listing every serving tray (the planner requires
each serving tray in its domain's pd_imex_domains list, docs/gb200-layout.md)
and the spec's groups and addresses as hosts.yml.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from .specs import GB200_VARS, ROOT


def write_inventory(spec: dict, directory: Path) -> int:
    """Write `spec` as an inventory directory; return its host count."""
    shutil.copytree(GB200_VARS, directory / "group_vars")
    (directory / "group_vars" / "all" / "network.yml").write_text(f"pd_cluster_cidr: {spec['cluster_cidr']}\n")
    platform = directory / "group_vars" / "all" / "platform.yml"
    settings = yaml.safe_load(platform.read_text())
    settings["pd_imex_domains"] = {settings["pd_imex_domain"]: [
        spec["hosts"][h]["address"] for group in ("prefill", "decode") for h in spec["groups"][group]]}
    platform.write_text(yaml.safe_dump(settings, sort_keys=False))
    children = {group: {"hosts": {h: {"pd_address": spec["hosts"][h]["address"]} for h in hosts}}
                for group, hosts in spec["groups"].items()}
    (directory / "hosts.yml").write_text(json.dumps({"all": {"children": children}}, indent=1))
    return len({h for hosts in spec["groups"].values() for h in hosts})


def timed_render(inventory: Path, render_dir: Path, *extra_vars: str) -> float:
    """Wall seconds of playbooks/render.yml on `inventory` (the venv's
    ansible-playbook); a failed run stops the benchmark with its output."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    extra = [arg for value in (f"render_dir={render_dir}", *extra_vars) for arg in ("-e", value)]
    start = time.perf_counter()
    run = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"),
                          str(ROOT / "playbooks" / "render.yml"), "-i", str(inventory), *extra],
                         capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    elapsed = time.perf_counter() - start
    if run.returncode:
        raise SystemExit(f"render.yml failed:\n{run.stdout[-3000:]}{run.stderr[-3000:]}")
    return elapsed
