"""Validation of the spec: cluster-wide settings, groups, hosts and pools.

Each check raises PlanError naming the variable and what is valid, and
returns NEW normalized values; nothing here changes its input. Rules that
depend on the vLLM release are in vllm_args.py.
"""

from __future__ import annotations

import posixpath
import re

from . import catalog
from .cluster import POOLS
from .errors import PlanError
from .inventory import CLUSTER_VARIABLES, HOST_VARIABLES, ROUTER_API_KEY_MIN_LENGTH
from .network import check_private, check_unique
from .schema import (
    ENV_MAP,
    HOST_OPTIONS,
    MODEL_OPTIONS,
    MONITORING_OPTIONS,
    POOL_OPTIONS,
    ROUTER_OPTIONS,
    SPEC_OPTIONS,
    check_value,
    normalize,
)
from .vllm_args import check_kv_transfer_fields

DEFAULT_KV_ROLES = {"prefill": "kv_producer", "decode": "kv_consumer"}
DEFAULT_VLLM_INSTALL_ROOT = "/opt/vllm"

# Flags the planner owns: setting them through extra_args would desynchronise
# the plan (ports, ranks, router URLs) from what runs.
PLANNER_FLAGS = frozenset({
    "--host", "--port", "--served-model-name", "--model",
    "--tensor-parallel-size", "-tp", "--pipeline-parallel-size", "-pp",
    "--data-parallel-size", "-dp", "--data-parallel-size-local", "-dpl",
    "--data-parallel-address", "-dpa", "--data-parallel-rpc-port", "-dpp",
    "--data-parallel-start-rank", "-dpr", "--headless",
    "--enable-expert-parallel", "-ep", "--kv-transfer-config",
})
PLANNER_ENV = frozenset({
    "CUDA_VISIBLE_DEVICES", "VLLM_NIXL_SIDE_CHANNEL_HOST", "VLLM_NIXL_SIDE_CHANNEL_PORT",
    "VLLM_HOST_IP", "VLLM_CPU_OMP_THREADS_BIND", "UCX_NET_DEVICES",
})
ROUTER_FLAGS = frozenset({
    "--host", "--port", "--prefill", "--decode", "--vllm-pd-disaggregation",
    "--prometheus-host", "--prometheus-port", "--api-key", "--worker-urls",
    "--vllm-discovery-address", "--kv-connector",
})
_FLAG = re.compile(r"^--?[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_SIZE = re.compile(r"^(\d+)([kKmM]?)$")


def parse_len(value: object, variable: str) -> int | None:
    """max_model_len as vLLM reads it: 32768, '32k', '1M', or 'auto'/None."""
    if value is None or value == "auto":
        return None
    if isinstance(value, int):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise PlanError(f"{variable} is {value!r}; expected an integer, '32k' style, or 'auto'")
    number, unit = match.groups()
    return int(number) * {"": 1, "k": 1000, "K": 1024, "m": 10**6, "M": 2**20}[unit]


# ----------------------------------------------------------------------------
# Validation of cluster-wide settings

def check_install_root(value: object) -> str:
    root = DEFAULT_VLLM_INSTALL_ROOT if value is None else value
    if not isinstance(root, str) or not root.startswith("/"):
        raise PlanError(
            f"pd_vllm_install_root is {root!r}; expected an absolute directory such as "
            f"{DEFAULT_VLLM_INSTALL_ROOT} (one venv per vLLM version is created under it)"
        )
    return posixpath.normpath(root)


def check_flag_map(flags: dict, variable: str, reserved: frozenset) -> None:
    for flag in flags:
        if not _FLAG.match(str(flag)):
            raise PlanError(f"{variable} key {flag!r} is not a command-line flag (write it as '--name')")
        if str(flag).split("=")[0] in reserved:
            raise PlanError(
                f"{variable} sets {flag}, which the planner computes; "
                f"remove it (planner-owned flags: {', '.join(sorted(reserved))})"
            )


def check_pool(pool_name: str, raw: object, version: tuple, connector: str, model_profile: dict | None,
               warnings: list) -> dict:
    """The pool's pd_pool, normalized and checked; a new dict."""
    var = f"pd_pool ({pool_name})"
    release = ".".join(str(part) for part in version)
    pool = normalize(raw, POOL_OPTIONS, var, context={"vllm_version": release})
    if pool["gpus_per_instance"] is None:
        raise PlanError(f"{var}.gpus_per_instance is not set; it is the GPU count of one {pool_name} instance")
    for key in ("gpus_per_instance", "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"):
        if pool[key] < 1:
            raise PlanError(f"{var}.{key} is {pool[key]}; it must be at least 1")
    if pool["instances"] is not None and pool["instances"] < 1:
        raise PlanError(f"{var}.instances is {pool['instances']}; at least 1, or unset to fill the pool")
    tp, pp, dp = pool["tensor_parallel_size"], pool["pipeline_parallel_size"], pool["data_parallel_size"]
    if tp * pp * dp != pool["gpus_per_instance"]:
        raise PlanError(
            f"{var}: tensor_parallel_size {tp} x pipeline_parallel_size {pp} x data_parallel_size {dp} "
            f"= {tp * pp * dp} GPUs, but gpus_per_instance is {pool['gpus_per_instance']}; "
            "the three must multiply out to gpus_per_instance"
        )
    pool["kv_role"] = pool["kv_role"] or DEFAULT_KV_ROLES[pool_name]
    if pool["enable_eplb"]:
        if not pool["expert_parallel"]:
            raise PlanError(
                f"{var}: enable_eplb needs expert parallelism; set expert_parallel: true "
                "(EPLB balances experts across the expert-parallel group)"
            )
        if tp * dp <= 1:
            raise PlanError(
                f"{var}: enable_eplb needs an expert-parallel group larger than one GPU "
                f"(tensor_parallel_size x data_parallel_size is {tp * dp})"
            )
    elif pool["eplb_config"]:
        raise PlanError(f"{var}.eplb_config is set but enable_eplb is false; enable EPLB or drop eplb_config")
    if pool["enable_dbo"] and pool["all2all_backend"] not in catalog.DBO_ALL2ALL_BACKENDS:
        raise PlanError(
            f"{var}: enable_dbo needs all2all_backend in {', '.join(catalog.DBO_ALL2ALL_BACKENDS)} "
            f"(got {pool['all2all_backend']!r}); vLLM asserts this when the engine starts"
        )
    if pool["expert_parallel"] and model_profile is not None and not model_profile.get("routed_experts"):
        warnings.append(
            f"{var}.expert_parallel is true but pd_model.profile {model_profile['name']} is a dense model "
            "(no routed experts), so expert parallelism has nothing to spread; set expert_parallel: false"
        )
    if pool["all2all_backend"] and not pool["expert_parallel"]:
        warnings.append(f"{var}: all2all_backend {pool['all2all_backend']} has no effect without expert_parallel")
    sizes = pool["cudagraph_capture_sizes"]
    if any(s < 1 for s in sizes):
        raise PlanError(f"{var}.cudagraph_capture_sizes must be positive integers, got {sizes!r}")
    if sizes and pool["max_cudagraph_capture_size"] and max(sizes) != pool["max_cudagraph_capture_size"]:
        raise PlanError(
            f"{var}: max_cudagraph_capture_size {pool['max_cudagraph_capture_size']} differs from the "
            f"largest of cudagraph_capture_sizes ({max(sizes)}); set one of them or make them agree"
        )
    if pool["enforce_eager"] and (sizes or pool["max_cudagraph_capture_size"]):
        warnings.append(f"{var}: enforce_eager disables CUDA graphs; the cudagraph sizes are ignored")
    util = pool["gpu_memory_utilization"]
    if util is not None and not 0 < util <= 1:
        raise PlanError(f"{var}.gpu_memory_utilization is {util}; it must be in (0, 1]")
    parse_len(pool["max_model_len"], f"{var}.max_model_len")
    offload = pool["offload"]
    group, in_group = offload["offload_group_size"], offload["offload_num_in_group"]
    if group is not None and in_group is not None and in_group > group:
        raise PlanError(
            f"{var}.offload: offload_num_in_group {in_group} must be <= offload_group_size {group}"
        )
    if model_profile and model_profile.get("quantization") and pool["quantization"] not in (
        None, model_profile["quantization"],
    ):
        raise PlanError(
            f"{var}.quantization is {pool['quantization']!r} but the checkpoint profile "
            f"{model_profile['name']} is quantized as {model_profile['quantization']!r}; "
            "leave quantization unset so vLLM reads it from the checkpoint"
        )
    check_flag_map(pool["extra_args"], f"{var}.extra_args", PLANNER_FLAGS)
    for key in pool["env"]:
        if key in PLANNER_ENV:
            raise PlanError(f"{var}.env sets {key}, which the planner computes per node; remove it")
    check_kv_transfer_fields(var, pool["kv_transfer_config"], version)
    if connector != "P2pNcclConnector" and pool["kv_buffer_size"] is not None:
        raise PlanError(f"{var}.kv_buffer_size applies only to P2pNcclConnector (pd_kv_connector is {connector})")
    return pool



def host_profile(host: str, hspec: dict) -> dict:
    name = hspec["gpu_profile"]
    if name is None:
        raise PlanError(
            f"host {host} has no pd_gpu_profile; valid: {', '.join(catalog.GPU_PROFILES)}"
        )
    profile = catalog.GPU_PROFILES.get(name)
    if profile is None:
        raise PlanError(
            f"host {host}: pd_gpu_profile {name!r} is unknown; valid: {', '.join(catalog.GPU_PROFILES)}"
        )
    gpus = hspec["gpus"] if hspec["gpus"] is not None else profile["gpus"]
    if gpus < 1:
        raise PlanError(f"host {host}: pd_gpus is {gpus}; it must be at least 1")
    return {"name": name, **profile, "gpus": gpus}


def check_monitoring(raw: object) -> dict:
    monitoring = normalize(raw, MONITORING_OPTIONS, "pd_monitoring")
    for key in ("scrape_interval", "alert_for", "alert_down_for"):
        if not re.fullmatch(r"[1-9][0-9]*(ms|s|m|h)", monitoring[key]):
            raise PlanError(
                f"pd_monitoring.{key} {monitoring[key]!r} is not a Prometheus duration; "
                "valid: a whole number with ms, s, m or h, e.g. 15s"
            )
    for key in ("alert_idle_kv_usage", "alert_kv_cache_usage", "alert_router_error_ratio"):
        if not 0 < monitoring[key] <= 1:
            raise PlanError(f"pd_monitoring.{key} is {monitoring[key]}; valid: a ratio above 0, at most 1")
    for key in ("tpgs_reference_prefill", "tpgs_reference_decode", "alert_prefill_waiting",
                "alert_decode_waiting", "alert_ttft_p99_seconds", "alert_itl_p99_seconds"):
        if monitoring[key] <= 0:
            raise PlanError(f"pd_monitoring.{key} is {monitoring[key]}; valid: a number above 0")
    return monitoring


def check_groups(spec: dict) -> dict:
    groups = {k: list(v or []) for k, v in (spec.get("groups") or {}).items()}
    for name in (*POOLS, "router", "monitoring"):
        groups.setdefault(name, [])
    for pool in POOLS:
        if not groups[pool]:
            raise PlanError(
                f"group {pool} has no hosts; the inventory needs at least one {pool} host "
                "(hosts: prefill, decode, router, monitoring)"
            )
        if len(set(groups[pool])) != len(groups[pool]):
            raise PlanError(f"group {pool} lists a host twice")
    both = [h for h in groups["prefill"] if h in set(groups["decode"])]
    if both:
        raise PlanError(
            f"host {both[0]} is in both groups prefill and decode; a GPU node serves one pool only"
        )
    if not groups["router"]:
        raise PlanError("group router has no hosts; the inventory needs one router host")
    return groups


def check_model(raw: object) -> tuple[dict, dict | None]:
    """pd_model normalized, and its capacity profile (None: no profile)."""
    model = normalize(raw, MODEL_OPTIONS, "pd_model")
    for key in ("served_name", "path"):
        if not model[key]:
            raise PlanError(f"pd_model.{key} is not set")
    if model["profile"] is None:
        return model, None
    if model["profile"] not in catalog.MODEL_PROFILES:
        raise PlanError(
            f"pd_model.profile {model['profile']!r} is unknown; "
            f"valid: {', '.join(catalog.MODEL_PROFILES)}"
        )
    return model, {"name": model["profile"], **catalog.MODEL_PROFILES[model["profile"]]}


def check_router(raw: object) -> dict:
    router = normalize(raw, ROUTER_OPTIONS, "pd_router")
    check_flag_map(router["extra_args"], "pd_router.extra_args", ROUTER_FLAGS)
    return router


def check_hosts(raw: object, hosts: list[str]) -> dict:
    raw = raw or {}
    names = {key: variable for variable, key in HOST_VARIABLES.items()}
    return {h: normalize(raw.get(h), HOST_OPTIONS, f"host {h}:", names=names) for h in hosts}


def check_worker_env(raw: object) -> dict:
    env = check_value(raw or {}, ENV_MAP, "pd_worker_env")
    for key in env:
        if key in PLANNER_ENV:
            raise PlanError(f"pd_worker_env sets {key}, which the planner computes per node; remove it")
    return env


def check_settings(spec: dict) -> None:
    """Types of the cluster-wide scalar settings, before anything reads them."""
    names = {key: variable for variable, key in CLUSTER_VARIABLES.items()}
    for key, (spec_type, _default, _meaning) in SPEC_OPTIONS.items():
        check_value(spec.get(key), spec_type, names[key])
    if not isinstance(spec.get("pools") or {}, dict):
        raise PlanError("pd_pool must be set per pool group (group_vars/prefill.yml, group_vars/decode.yml)")


# Secrets an enabled feature needs, as the inventory reader reports them
# (spec["secrets"]: variable -> "ok", "missing" or "short"; never the value).
ROUTER_API_KEY_VARIABLE = "pd_router_api_key"
# Router numbers: far beyond any sensible value, and inside every integer
# field vllm-router 0.1.17 parses them into (10**20 made it fail at start).
ROUTER_INT_MAX = 2**31 - 1
# An absolute URL path: RFC 3986 path characters, no query or fragment.
_URL_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")


def check_router_values(router: dict, routers: list[str]) -> None:
    """pd_router's numbers, bind address and endpoint path, as vllm-router
    would need them (it only finds out when it starts, after the workers)."""
    for key, value in router.items():
        if not isinstance(value, int) or isinstance(value, bool):
            continue
        if value > ROUTER_INT_MAX:
            raise PlanError(f"pd_router.{key} is {value}; valid: at most {ROUTER_INT_MAX}")
        if key == "max_concurrent_requests" and value < 1:
            # Measured on vllm-router 0.1.17: with 0 it answers 429 to every request.
            raise PlanError(f"pd_router.max_concurrent_requests is {value}; valid: at least 1 (vllm-router "
                            "admits nothing with 0), or unset to derive it from decode capacity")
        if key.endswith("port"):
            if not 1 <= value <= 65535:
                raise PlanError(f"pd_router.{key} is {value}; valid: a port number 1-65535")
        elif key.endswith(("_secs", "_interval", "_threshold")):
            if value < 1:
                raise PlanError(f"pd_router.{key} is {value}; valid: a whole number, at least 1")
        elif value < 0:
            raise PlanError(f"pd_router.{key} is {value}; valid: 0 or more")
    interval, timeout = router.get("worker_startup_check_interval"), router.get("worker_startup_timeout_secs")
    if interval is not None and timeout is not None and interval > timeout:
        raise PlanError(
            f"pd_router.worker_startup_check_interval {interval} is longer than "
            f"pd_router.worker_startup_timeout_secs {timeout}; valid: an interval at most the timeout"
        )
    announce = router.get("announce_interval_secs")
    # vllm-router drops a discovered instance 5 s (whole seconds) after its
    # last announcement: two must fit in 4 s or a healthy instance flaps.
    if announce is not None and not 0.1 <= announce <= 2:
        raise PlanError(f"pd_router.announce_interval_secs is {announce}; valid: 0.1 to 2 (vllm-router drops an "
                        "instance about 5 s after its last announcement)")
    endpoint = router["health_check_endpoint"]
    if not _URL_PATH.fullmatch(endpoint):
        raise PlanError(
            f"pd_router.health_check_endpoint is {endpoint!r}; valid: an absolute URL path such as /health "
            "(starting with /, no spaces, query or fragment)"
        )
    bind = router["bind_address"]
    if bind is None:
        return
    parts = bind.split(".")
    if len(parts) != 4 or not all(p.isdigit() and int(p) <= 255 and str(int(p)) == p for p in parts):
        raise PlanError(
            f"pd_router.bind_address is {bind!r}; valid: an IPv4 address of the router host, 0.0.0.0 for "
            "every interface, or unset for its cluster address (IPv6 and host names are not accepted)"
        )
    if bind != "0.0.0.0" and len(routers) > 1:
        raise PlanError(
            f"pd_router.bind_address {bind} is one address but the router group has {len(routers)} hosts "
            f"({', '.join(routers)}); valid with several routers: 0.0.0.0 or unset (each its cluster address)"
        )


def check_secrets(spec: dict, router: dict) -> None:
    """A feature that needs a vault secret fails here, not after workers changed.
    Callers that pass no `secrets` (library use without an inventory) skip this."""
    secrets = spec.get("secrets")
    if secrets is None or not router["api_key_enabled"]:
        return
    status = secrets.get(ROUTER_API_KEY_VARIABLE, "missing")
    if status != "ok":
        if status.startswith("missing"):
            problem = "is not set" + status[len("missing"):]
        elif status.startswith("differs"):
            problem = "has different values: it " + status + " (the router would be refused by the workers)"
        else:
            problem = f"is shorter than {ROUTER_API_KEY_MIN_LENGTH} characters"
        raise PlanError(
            f"pd_router.api_key_enabled is true but the vault variable {ROUTER_API_KEY_VARIABLE} {problem}; "
            f"valid: one key of {ROUTER_API_KEY_MIN_LENGTH}+ characters that the router and every worker host "
            "see (group_vars/all, ansible-vault encrypt_string), or api_key_enabled: false"
        )


def check_cluster_wide(spec: dict, groups: dict, router: dict, addresses: dict, network) -> None:
    """Rules across hosts and settings, once every host has its address."""
    check_unique(addresses)
    check_private(network, spec.get("allow_public_network") is True)
    check_router_values(router, groups["router"])
    check_secrets(spec, router)
