"""Build the planner's spec from inventory variables.

`read(host, variable)` returns one host's value of one variable (None when
unset), so this module stays free of Ansible: the filter plugin passes a
reader over hostvars, tests pass a dict.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable, Mapping

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
    "pd_serving": "serving",  # checked by rayserve.py
    "pd_imex_domains": "imex_domains",  # checked by topology.py
    "pd_workload": "workload",  # checked by sizing.py
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

# Refuse a public cluster network unless this is true (the pd_plan role's
# variable; read from the inventory or -e like the others).
ALLOW_PUBLIC_VARIABLE = "pd_plan_allow_public_network"
# Vault variables of features; the planner only learns whether they are set.
SECRET_VARIABLES = ("pd_router_api_key", "pd_hf_token", "pd_grafana_admin_password",
                    "pd_front_door_api_keys", "pd_front_door_tls_certificate", "pd_front_door_tls_private_key")
ROUTER_API_KEY_MIN_LENGTH = 16
# pd_* names that are not planner inputs but may legitimately be in an
# inventory or in hostvars: the plan fact, role and playbook variables.
# tests/unit/test_bad_input.py keeps this in step with roles and playbooks.
OTHER_VARIABLES = (
    "pd_plan", "pd_plan_show", "pd_plan_refresh", ALLOW_PUBLIC_VARIABLE,
    "pd_systemd_verify_unit", "pd_systemd_worker_gate",
    "pd_run_lock_file", "pd_run_lock_stale_after",
    "pd_venv_path", "pd_venv_steps", "pd_venv_version", "pd_venv_version_code", "pd_venv_mark",
    "pd_venv_python", "pd_venv_wheelhouse", "pd_venv_index_url", "pd_venv_extra_index_urls",
    "pd_venv_environment",
)


def known_variables() -> tuple[str, ...]:
    """Every pd_* variable name an inventory may set."""
    planner = [*CLUSTER_VARIABLES, *(v for v in HOST_VARIABLES if v.startswith("pd_")), POOL_VARIABLE]
    return tuple(sorted({*planner, *SECRET_VARIABLES, *OTHER_VARIABLES}))


def check_variable_names(hosts: list[str], names: Callable) -> None:
    """Refuse pd_* variables this toolkit does not know (a typo would
    otherwise be silently ignored), with the closest known name."""
    known = set(known_variables())
    unknown: dict[str, str] = {}
    for host in hosts:
        for name in names(host):
            if str(name).startswith("pd_") and name not in known:
                unknown.setdefault(str(name), host)
    if not unknown:
        return
    parts = []
    for name, host in sorted(unknown.items()):
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        parts.append(f"{name}{hint} on host {host}")
    raise PlanError(
        f"unknown variable(s): {'; '.join(parts)}. A misspelled variable would be ignored, so it is refused; "
        f"valid pd_* variables: {', '.join(sorted(known))} (docs/variables.md)"
    )


def _secret_status(hosts: list[str], read: Callable, variable: str, minimum: int) -> str:
    """"ok", "missing on HOST", "short" or "differs on HOST" for a secret
    every one of these hosts must see, the same; the value itself never
    leaves this function (compared by digest)."""
    if not hosts:
        return "missing"
    status, first = "ok", None
    for host in hosts:
        value = read(host, variable)
        if value is None or value == "":
            return f"missing on {host}"
        if len(str(value)) < minimum:
            status = "short"
        digest = hashlib.sha256(str(value).encode()).hexdigest()
        if first is None:
            first = (host, digest)
        elif digest != first[1] and status == "ok":
            status = f"differs on {host} from {first[0]}"
    return status


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
    names = getattr(read, "names", None)
    if names is not None:
        check_variable_names(list(dict.fromkeys([*hosts, *retired])), names)
    spec: dict = {"groups": groups, "pools": {}, "hosts": {}}
    for variable, key in CLUSTER_VARIABLES.items():
        spec[key] = _one_value(variable, hosts, read, "cluster-wide")
    allow = _one_value(ALLOW_PUBLIC_VARIABLE, hosts, read, "cluster-wide")
    if allow not in (None, True, False):
        raise PlanError(f"{ALLOW_PUBLIC_VARIABLE} is {allow!r}; expected true or false")
    spec["allow_public_network"] = allow is True
    # Secrets enabled features need, judged here so the plan fails before
    # any host changes; only a status enters the spec, never the value.
    router = spec.get("router")
    spec["secrets"] = {}
    if isinstance(router, Mapping) and router.get("api_key_enabled") is True:
        # The router sends it and the workers require it (VLLM_API_KEY): every
        # router and serving host must see the same key.
        spec["secrets"]["pd_router_api_key"] = _secret_status(
            list(dict.fromkeys([*groups["router"], *groups["prefill"], *groups["decode"]])), read,
            "pd_router_api_key", ROUTER_API_KEY_MIN_LENGTH)
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
