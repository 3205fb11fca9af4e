"""Shared helpers: the planner on sys.path, inventories loaded through Ansible."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from pd_planner.inventory import spec_from_inventory  # noqa: E402

BIN = Path(sys.executable).parent
ENV = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "PY_COLORS": "0", "ANSIBLE_NOCOLOR": "1"}
GB200_VARS = ROOT / "inventories" / "gb200" / "group_vars"


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


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def gb200_pools() -> dict:
    """The sample inventory's pool shapes, so unit tests follow the sample."""
    return {
        "prefill": _load(GB200_VARS / "prefill.yml")["pd_pool"],
        "decode": _load(GB200_VARS / "decode.yml")["pd_pool"],
    }


def address(index: int, block: int) -> str:
    return f"10.20.{block + index // 250}.{index % 250 + 1}"


def make_spec(prefill_hosts: int = 2, decode_hosts: int = 2, *, pools: dict | None = None,
              profile: str = "gb200_nvl72_tray", **cluster) -> dict:
    """A spec like the gb200 sample with N prefill and M decode trays."""
    pools = copy.deepcopy(pools if pools is not None else gb200_pools())
    hosts: dict = {"ctl-01": {"address": "10.20.0.5"}}
    groups = {"prefill": [], "decode": [], "router": ["ctl-01"], "monitoring": ["ctl-01"]}
    for i in range(prefill_hosts):
        name = f"prefill-tray-{i:03d}"
        groups["prefill"].append(name)
        hosts[name] = {"address": address(i, 10), "gpu_profile": profile, "imex_domain": "nvl72-a"}
    for i in range(decode_hosts):
        name = f"decode-tray-{i:03d}"
        groups["decode"].append(name)
        hosts[name] = {"address": address(i, 40), "gpu_profile": profile, "imex_domain": "nvl72-a"}
    spec = {
        "vllm_version": "0.33.0",
        "kv_connector": "NixlConnector",
        "model": {"served_name": "deepseek-ai/DeepSeek-R1", "path": "/models/deepseek-r1-nvfp4",
                  "profile": "deepseek_r1_nvfp4"},
        "cluster_cidr": "10.20.0.0/16",
        "router": {"port": 8000, "metrics_port": 29000},
        "monitoring": {"prometheus_port": 9090},
        "worker_env": {},
        "pools": pools,
        "groups": groups,
        "hosts": hosts,
    }
    spec.update(cluster)
    return spec


@pytest.fixture(scope="session")
def gb200_spec() -> dict:
    return inventory_spec(ROOT / "inventories" / "gb200")


@pytest.fixture(scope="session")
def lab_spec() -> dict:
    return inventory_spec(ROOT / "inventories" / "lab")
