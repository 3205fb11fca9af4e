"""Build the planner's spec from inventory variables.

`read(host, variable)` returns one host's value of one variable (None when
unset), so this module stays free of Ansible: the filter plugin passes a
reader over hostvars, tests pass a dict.
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import PlanError

# Cluster-wide variables (group_vars/all): every host must see one value.
CLUSTER_VARIABLES = {
    "pd_vllm_version": "vllm_version",
    "pd_kv_connector": "kv_connector",
    "pd_model": "model",
    "pd_cluster_cidr": "cluster_cidr",
    "pd_router": "router",
    "pd_monitoring": "monitoring",
    "pd_worker_env": "worker_env",
    "pd_ucx_tls": "ucx_tls",
    "pd_kv_shared_storage_path": "kv_shared_storage_path",
    "pd_vllm_install_root": "vllm_install_root",
}
REQUIRED = ("pd_vllm_version", "pd_kv_connector", "pd_model", "pd_cluster_cidr")

# Per-host variables.
HOST_VARIABLES = {
    "pd_address": "address",
    "ansible_host": "ansible_host",
    "fact_addresses": "fact_addresses",
    "pd_gpu_profile": "gpu_profile",
    "pd_gpus": "gpus",
    "pd_cpu_cores": "cpu_cores",
    "pd_imex_domain": "imex_domain",
    "pd_ucx_net_devices": "ucx_net_devices",
    "pd_instance_names": "instance_names",
    "pd_kv_ranks": "kv_ranks",
}

# Pool shape: group_vars/prefill.yml and group_vars/decode.yml.
POOL_VARIABLE = "pd_pool"
ROLE_GROUPS = ("prefill", "decode", "router", "monitoring")
# Scale-in: hosts moved here leave the router, drain, and lose their units;
# then they can be deleted from the inventory.
RETIRED_GROUP = "retired"


def _one_value(variable: str, hosts: list[str], read: Callable, scope: str):
    first_host, first = None, None
    for host in hosts:
        value = read(host, variable)
        if first_host is None:
            first_host, first = host, value
        elif value != first:
            raise PlanError(
                f"{variable} differs between hosts {first_host} and {host}; it is {scope}, "
                f"so set it once (group_vars/{'all' if scope == 'cluster-wide' else scope.split()[-1]}), "
                "not per host"
            )
    return first


def spec_from_inventory(groups: dict, read: Callable) -> dict:
    """Collect the planner's spec from groups and a per-host variable reader."""
    retired = list(groups.get(RETIRED_GROUP) or [])
    groups = {g: list(groups.get(g) or []) for g in ROLE_GROUPS}
    for group in ("prefill", "decode"):
        both = [h for h in groups[group] if h in retired]
        if both:
            raise PlanError(
                f"host {both[0]} is in groups {group} and {RETIRED_GROUP}: a retired host serves nothing "
                f"and only has its instances drained and removed; take it out of {group}"
            )
    hosts = list(dict.fromkeys(h for g in ROLE_GROUPS for h in groups[g]))
    if not hosts:
        raise PlanError(
            "the inventory has no hosts in the groups prefill, decode, router or monitoring"
        )
    spec: dict = {"groups": groups, "pools": {}, "hosts": {}}
    for variable, key in CLUSTER_VARIABLES.items():
        spec[key] = _one_value(variable, hosts, read, "cluster-wide")
    for variable in REQUIRED:
        if spec[CLUSTER_VARIABLES[variable]] in (None, "", {}):
            raise PlanError(f"{variable} is not set; define it in group_vars/all")
    for pool in ("prefill", "decode"):
        members = [h for h in groups[pool] if h not in set(groups["decode" if pool == "prefill" else "prefill"])]
        spec["pools"][pool] = _one_value(POOL_VARIABLE, members, read, f"the shape of pool {pool}")
    for host in hosts:
        spec["hosts"][host] = {
            key: value
            for variable, key in HOST_VARIABLES.items()
            if (value := read(host, variable)) is not None
        }
    return spec
