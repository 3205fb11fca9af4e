"""The deployment plan a serving benchmark measures: a plan.json given on the
command line, or the lab inventory's plan rendered by playbooks/render.yml."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_plan(path: str | None, inventory: str = "inventories/lab") -> dict:
    """`render_hosts=` (empty): the plan alone, no host is contacted."""
    if path:
        return json.loads(Path(path).read_text())
    out = ROOT / ".cache" / "bench-render"
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    subprocess.run([str(ROOT / ".venv" / "bin" / "ansible-playbook"), str(ROOT / "playbooks" / "render.yml"),
                    "-i", str(ROOT / inventory), "-e", f"render_dir={out}", "-e", "render_hosts="],
                   check=True, capture_output=True, cwd=ROOT, env=env)
    return json.loads((out / "plan.json").read_text())


def gpu_unit(plan: dict) -> str:
    """'CPU' where the plan's instances run on CPU cores (the lab: one pinned
    core stands in for each GPU), else 'GPU'."""
    instances = plan["instances"].values() if isinstance(plan["instances"], dict) else plan["instances"]
    devices = {node["device"] for instance in instances for node in instance["nodes"]}
    return "CPU" if devices == {"cpu"} else "GPU"
