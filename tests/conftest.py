"""Shared helpers: inventories loaded through Ansible (pd_planner is installed: pyproject.toml)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pd_planner import PlanError, build_plan
from pd_planner.inventory import spec_from_inventory
from specs import address, gb200_pools, make_spec  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]

BIN = Path(sys.executable).parent
ENV = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "PY_COLORS": "0", "ANSIBLE_NOCOLOR": "1"}


def local_play(tmp_path: Path, play: str, variables: dict, name: str = "play.yml") -> subprocess.CompletedProcess:
    """Run a playbook's text on localhost with its variables (vars.json, so
    nested values keep their types), under this venv's Python."""
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    (tmp_path / name).write_text(play)
    return subprocess.run(
        [str(BIN / "ansible-playbook"), str(tmp_path / name), "-i", "localhost,", "-c", "local",
         "-e", f"ansible_python_interpreter={sys.executable}", "-e", f"@{tmp_path / 'vars.json'}"],
        capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)


def plan_fails(spec: dict, *fragments: str) -> str:
    """The planner refuses `spec`; its message holds every fragment. Returns the message."""
    with pytest.raises(PlanError) as caught:
        build_plan(spec)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def ansible_inventory(path: Path) -> tuple[dict, dict]:
    """(groups, hostvars) exactly as Ansible merges them for an inventory."""
    out = subprocess.run(
        [str(BIN / "ansible-inventory"), "-i", str(path), "--list"],
        check=True, capture_output=True, text=True, env=ENV, cwd=ROOT,
    ).stdout
    data = json.loads(out)
    hostvars = data.get("_meta", {}).get("hostvars", {})
    groups = {name: body.get("hosts", []) for name, body in data.items() if name != "_meta"}
    return groups, hostvars


def inventory_spec(path: Path) -> dict:
    groups, hostvars = ansible_inventory(path)

    def read(host, variable):
        if variable == "fact_addresses":
            return None
        return hostvars.get(host, {}).get(variable)

    return spec_from_inventory(groups, read)


@pytest.fixture(scope="session")
def gb200_spec() -> dict:
    return inventory_spec(ROOT / "inventories" / "gb200")


@pytest.fixture(scope="session")
def lab_spec() -> dict:
    return inventory_spec(ROOT / "inventories" / "lab")


@pytest.fixture(scope="session")
def promtool() -> str:
    """Debian's promtool (`make promtool` unpacks it); the same version the
    monitoring hosts install."""
    path = os.environ.get("PD_PROMTOOL") or str(ROOT / ".cache" / "prometheus" / "usr" / "bin" / "promtool")
    if not os.access(path, os.X_OK):
        pytest.fail(f"promtool not found at {path}: run `make promtool`")
    return path
