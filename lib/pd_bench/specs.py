"""Planner specs shaped like the gb200 sample, for tests and the benchmarks
(no pytest here). Reads the sample's pool shapes from the checkout's
inventories/gb200, so it serves an editable install of a clone."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]

GB200_VARS = ROOT / "inventories" / "gb200" / "group_vars"


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
