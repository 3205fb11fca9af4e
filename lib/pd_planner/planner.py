"""The cluster planner: inventory spec in, deterministic deployment plan out.

`build_plan(spec)` is pure: same spec, same plan, byte for byte. It raises
PlanError on input that could not be deployed, before anything touches a host.

spec = {
  "vllm_version": "0.33.0", "kv_connector": "NixlConnector",
  "model": {...MODEL_OPTIONS}, "cluster_cidr": "10.20.0.0/22",
  "router": {...ROUTER_OPTIONS}, "monitoring": {...MONITORING_OPTIONS},
  "worker_env": {...}, "ucx_tls": None, "kv_shared_storage_path": None,
  "pools": {"prefill": {...POOL_OPTIONS}, "decode": {...}},
  "groups": {"prefill": [host, ...], "decode": [...], "router": [...], "monitoring": [...]},
  "hosts": {host: {...HOST_OPTIONS}},
}
"""

from __future__ import annotations

import json
import posixpath
import re

from . import catalog
from .errors import PlanError
from .network import cluster_network, pick_address
from .schema import (
    HOST_OPTIONS,
    MODEL_OPTIONS,
    MONITORING_OPTIONS,
    OFFLOAD_BACKENDS,
    OFFLOAD_OPTIONS,
    POOL_OPTIONS,
    ROUTER_OPTIONS,
    normalize,
)
from .versions import parse_version, version_in_range

POOLS = ("prefill", "decode")
SCHEMA_VERSION = 1
DEFAULT_KV_ROLES = {"prefill": "kv_producer", "decode": "kv_consumer"}

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
ROUTER_API_KEY_ENV = "VLLM_ROUTER_API_KEY"
DEFAULT_VLLM_INSTALL_ROOT = "/opt/vllm"
# How a worker starts vLLM, per flavor: argv before the model path, relative
# to the venv. The CPU build ships no `vllm` dist metadata, so `vllm serve`
# fails there; the API server module takes the same arguments.
VLLM_LAUNCHERS = {
    "cuda": ("bin/vllm", "serve"),
    "cpu": ("bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model"),
}
_FLAG = re.compile(r"^--?[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_SIZE = re.compile(r"^(\d+)([kKmM]?)$")


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _parse_len(value: object, variable: str) -> int | None:
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
# ----------------------------------------------------------------------------
def _check_version_and_connector(spec: dict, warnings: list) -> tuple:
    version = parse_version(spec.get("vllm_version"))
    if version < parse_version(catalog.VLLM_OLDEST_KNOWN):
        raise PlanError(
            f"pd_vllm_version {spec['vllm_version']} is older than {catalog.VLLM_OLDEST_KNOWN}, "
            "the oldest release this planner knows; pin a newer vLLM"
        )
    if version > parse_version(catalog.VLLM_NEWEST_KNOWN):
        warnings.append(
            f"pd_vllm_version {spec['vllm_version']} is newer than {catalog.VLLM_NEWEST_KNOWN}, the newest "
            "release this planner was checked against; the node-side argument check still applies"
        )
    connector = spec.get("kv_connector")
    info = catalog.CONNECTORS.get(connector)
    if info is None:
        raise PlanError(
            f"pd_kv_connector {connector!r} is not a connector this planner lays out; "
            f"valid: {', '.join(catalog.CONNECTORS)}"
        )
    if not version_in_range(version, info["min"], info["until"]):
        accepted = [
            name for name, other in catalog.CONNECTORS.items()
            if version_in_range(version, other["min"], other["until"])
        ]
        bound = (
            f"removed in {info['until']}" if info["until"] and version >= parse_version(info["until"])
            else f"added in {info['min']}"
        )
        raise PlanError(
            f"pd_kv_connector {connector} is not accepted by vLLM {spec['vllm_version']} ({bound}); "
            f"with this version use one of: {', '.join(accepted)}"
        )
    return version, connector, info


def _check_install_root(value: object) -> str:
    root = DEFAULT_VLLM_INSTALL_ROOT if value is None else value
    if not isinstance(root, str) or not root.startswith("/"):
        raise PlanError(
            f"pd_vllm_install_root is {root!r}; expected an absolute directory such as "
            f"{DEFAULT_VLLM_INSTALL_ROOT} (one venv per vLLM version is created under it)"
        )
    return posixpath.normpath(root)


def _vllm_host(device: str, version: str, install_root: str) -> dict:
    """How a worker host runs vLLM: flavor, venv, launcher argv and checker."""
    flavor = "cpu" if device == "cpu" else "cuda"
    venv = f"{install_root}/{version}"
    program, *rest = VLLM_LAUNCHERS[flavor]
    return {
        "flavor": flavor,
        "version": version,
        "venv": venv,
        "launcher": [f"{venv}/{program}", *rest],
        "check_args": f"{venv}/bin/vllm-check-args",
    }


def _check_flag_map(flags: dict, variable: str, reserved: frozenset) -> None:
    for flag in flags:
        if not _FLAG.match(str(flag)):
            raise PlanError(f"{variable} key {flag!r} is not a command-line flag (write it as '--name')")
        if str(flag).split("=")[0] in reserved:
            raise PlanError(
                f"{variable} sets {flag}, which the planner computes; "
                f"remove it (planner-owned flags: {', '.join(sorted(reserved))})"
            )


def _flag_args(flags: dict) -> list[str]:
    """{'--flag': value} to argv, sorted by flag for a stable order."""
    args: list[str] = []
    for flag in sorted(flags):
        value = flags[flag]
        if value is True:
            args.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, list):
            args.append(flag)
            args.extend(str(v) for v in value)
        elif isinstance(value, dict):
            args.extend([flag, _json(value)])
        else:
            args.extend([flag, str(value)])
    return args


def _check_pool(pool_name: str, pool: dict, version, connector: str, model_profile, warnings: list):
    var = f"pd_pool ({pool_name})"
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
    role = pool["kv_role"] or DEFAULT_KV_ROLES[pool_name]
    if role not in catalog.KV_ROLES:
        raise PlanError(f"{var}.kv_role {role!r} is not valid; valid: {', '.join(catalog.KV_ROLES)}")
    pool["kv_role"] = role
    if pool["kv_buffer_device"] is not None and pool["kv_buffer_device"] not in catalog.KV_BUFFER_DEVICES:
        raise PlanError(
            f"{var}.kv_buffer_device {pool['kv_buffer_device']!r} is not valid; "
            f"valid: {', '.join(catalog.KV_BUFFER_DEVICES)}"
        )
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
    if pool["all2all_backend"] and not pool["expert_parallel"]:
        warnings.append(f"{var}: all2all_backend {pool['all2all_backend']} has no effect without expert_parallel")
    sizes = pool["cudagraph_capture_sizes"]
    if any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in sizes):
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
    _parse_len(pool["max_model_len"], f"{var}.max_model_len")
    offload = normalize(pool["offload"], OFFLOAD_OPTIONS, f"{var}.offload")
    if offload["offload_backend"] is not None and offload["offload_backend"] not in OFFLOAD_BACKENDS:
        raise PlanError(
            f"{var}.offload.offload_backend {offload['offload_backend']!r} is not valid; "
            f"valid: {', '.join(OFFLOAD_BACKENDS)}"
        )
    group, in_group = offload["offload_group_size"], offload["offload_num_in_group"]
    if group is not None and in_group is not None and in_group > group:
        raise PlanError(
            f"{var}.offload: offload_num_in_group {in_group} must be <= offload_group_size {group}"
        )
    pool["offload"] = offload
    if model_profile and model_profile.get("quantization") and pool["quantization"] not in (
        None, model_profile["quantization"],
    ):
        raise PlanError(
            f"{var}.quantization is {pool['quantization']!r} but the checkpoint profile "
            f"{model_profile['name']} is quantized as {model_profile['quantization']!r}; "
            "leave quantization unset so vLLM reads it from the checkpoint"
        )
    _check_flag_map(pool["extra_args"], f"{var}.extra_args", PLANNER_FLAGS)
    for key in pool["env"]:
        if key in PLANNER_ENV:
            raise PlanError(f"{var}.env sets {key}, which the planner computes per node; remove it")
    # kv-transfer-config fields by version.
    accepted = set(catalog.KV_TRANSFER_FIELDS)
    if version < parse_version(catalog.KV_TRANSFER_LEGACY_FIELDS_REMOVED_IN):
        accepted |= set(catalog.KV_TRANSFER_LEGACY_FIELDS)
    for key in pool["kv_transfer_config"]:
        if key not in accepted:
            hint = (
                f" (removed in {catalog.KV_TRANSFER_LEGACY_FIELDS_REMOVED_IN})"
                if key in catalog.KV_TRANSFER_LEGACY_FIELDS else ""
            )
            raise PlanError(
                f"{var}.kv_transfer_config.{key} is not accepted by vLLM {'.'.join(map(str, version))}"
                f"{hint}; valid fields: {', '.join(sorted(accepted))}"
            )
        if key in ("kv_connector", "kv_role", "kv_connector_extra_config", "kv_rank", "kv_parallel_size"):
            raise PlanError(
                f"{var}.kv_transfer_config.{key} is computed by the planner; "
                "use pd_kv_connector, kv_role or kv_connector_extra_config instead"
            )
    if connector != "P2pNcclConnector" and pool["kv_buffer_size"] is not None:
        raise PlanError(f"{var}.kv_buffer_size applies only to P2pNcclConnector (pd_kv_connector is {connector})")
    return pool


# ----------------------------------------------------------------------------
# Hosts and placement
# ----------------------------------------------------------------------------
def _host_profile(host: str, hspec: dict) -> dict:
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


def _slots(pool_name: str, pool: dict, hosts: list[str], profiles: dict) -> list[list[tuple[str, int]]]:
    """Every instance the pool's hosts can hold, in inventory order.

    Returns a list of instances, each a list of (host, slot) node placements.
    Greedy in inventory order, so appending hosts only appends instances.
    """
    need = pool["gpus_per_instance"]
    placements: list[list[tuple[str, int]]] = []
    span: list[str] = []
    for host in hosts:
        gpus = profiles[host]["gpus"]
        if need <= gpus:
            if gpus % need:
                raise PlanError(
                    f"pd_pool ({pool_name}).gpus_per_instance {need} neither divides nor is a multiple of "
                    f"the {gpus} GPUs of host {host}; valid sizes for it: "
                    f"{', '.join(str(d) for d in range(1, gpus + 1) if gpus % d == 0)} or a multiple of {gpus}"
                )
            placements.extend([[(host, slot)] for slot in range(gpus // need)])
            continue
        if need % gpus:
            raise PlanError(
                f"pd_pool ({pool_name}).gpus_per_instance {need} neither divides nor is a multiple of "
                f"the {gpus} GPUs of host {host}"
            )
        if span and profiles[span[0]]["gpus"] != gpus:
            raise PlanError(
                f"pool {pool_name}: an instance of {need} GPUs would span hosts {span[0]} "
                f"({profiles[span[0]]['gpus']} GPUs) and {host} ({gpus} GPUs); "
                "hosts spanned by one instance must have the same GPU count"
            )
        span.append(host)
        if len(span) * gpus == need:
            placements.append([(h, 0) for h in span])
            span = []
    return placements


def _capacity(pool_name: str, pool: dict, profile: dict, model_profile: dict | None, warnings: list):
    """Per-GPU memory estimate; a layout whose weights cannot fit is an error."""
    if profile["device"] != "cuda" or not model_profile:
        return None
    var = f"pd_pool ({pool_name})"
    tp, pp, dp = pool["tensor_parallel_size"], pool["pipeline_parallel_size"], pool["data_parallel_size"]
    experts_shards = tp * pp * (dp if pool["expert_parallel"] else 1)
    # EPLB's redundant experts are extra copies held on the expert-parallel group.
    redundant = pool["eplb_config"].get("num_redundant_experts", 0) if pool["enable_eplb"] else 0
    routed = model_profile["routed_experts"]
    experts = model_profile["experts_gb"] * (routed + redundant) / routed if routed else 0.0
    weights = model_profile["dense_gb"] / (tp * pp) + experts / experts_shards
    offload = pool["offload"]
    offloaded = 0.0
    prefetch_buffer = 0.0
    if offload["offload_group_size"]:
        fraction = (offload["offload_num_in_group"] or 1) / offload["offload_group_size"]
        offloaded = weights * fraction
        prefetch_buffer = weights / model_profile["layers"] * (offload["offload_prefetch_step"] or 1)
    elif offload["cpu_offload_gb"]:
        offloaded = min(weights, offload["cpu_offload_gb"] * 1.073741824)
    on_gpu = weights - offloaded + prefetch_buffer
    util = pool["gpu_memory_utilization"] if pool["gpu_memory_utilization"] is not None else 0.92
    usable = profile["gpu_memory_gb"] * util
    kv_gb = usable - on_gpu - pool["runtime_reserve_gb"]
    summary = (
        f"{weights:.1f} GB of weights per GPU ({offloaded:.1f} GB offloaded), "
        f"{usable:.1f} GB usable ({profile['gpu_memory_gb']} GB x {util})"
    )
    if kv_gb <= 0:
        raise PlanError(
            f"pool {pool_name}: {model_profile['name']} does not fit: {summary}, "
            f"{pool['runtime_reserve_gb']} GB reserved, leaves {kv_gb:.1f} GB for KV cache; "
            "use more GPUs per instance, expert_parallel, a smaller checkpoint (NVFP4), or "
            f"{var}.offload (offload_group_size/offload_num_in_group or cpu_offload_gb)"
        )
    host_budget = (profile["host_memory_per_gpu_gb"] or 0) * 0.8
    if offloaded > host_budget:
        raise PlanError(
            f"pool {pool_name}: {offloaded:.1f} GB offloaded per GPU exceeds 80% of the "
            f"{profile['host_memory_per_gpu_gb']} GB host memory per GPU of {profile['name']}"
        )
    dtype = pool["kv_cache_dtype"] or "auto"
    per_token = model_profile["kv_bytes_per_token"].get(dtype, model_profile["kv_bytes_per_token"]["auto"])
    tokens = int(kv_gb * 1e9 // per_token)
    max_len = _parse_len(pool["max_model_len"], f"{var}.max_model_len")
    if max_len is not None and max_len > tokens:
        raise PlanError(
            f"pool {pool_name}: max_model_len {max_len} exceeds the {tokens} tokens of KV cache one "
            f"data-parallel rank holds ({kv_gb:.1f} GB at {per_token} B/token); vLLM would refuse to start"
        )
    if kv_gb < 10:
        warnings.append(f"pool {pool_name}: only {kv_gb:.1f} GB of KV cache per GPU ({tokens} tokens)")
    return {
        "weights_per_gpu_gb": round(weights, 1),
        "offloaded_per_gpu_gb": round(offloaded, 1),
        "usable_per_gpu_gb": round(usable, 1),
        "kv_cache_per_gpu_gb": round(kv_gb, 1),
        "kv_tokens_per_dp_rank": tokens,
    }


# ----------------------------------------------------------------------------
# Argument lists
# ----------------------------------------------------------------------------
def _kv_transfer_config(ctx: dict, pool_name: str, pool: dict, instance: dict, leader: dict) -> dict:
    """The --kv-transfer-config of an instance; legacy fields come from its leader node."""
    connector = ctx["connector"]
    config: dict = {"kv_connector": connector, "kv_role": pool["kv_role"]}
    if pool["kv_buffer_device"]:
        config["kv_buffer_device"] = pool["kv_buffer_device"]
    extra = dict(pool["kv_connector_extra_config"])
    if connector == "ExampleConnector":
        path = extra.get("shared_storage_path") or ctx["kv_shared_storage_path"]
        if not path:
            raise PlanError(
                "ExampleConnector needs a directory both pools share: set pd_kv_shared_storage_path "
                f"or pd_pool ({pool_name}).kv_connector_extra_config.shared_storage_path"
            )
        extra["shared_storage_path"] = path
    elif connector == "P2pNcclConnector":
        router = ctx["router_hosts"]
        extra.setdefault("proxy_ip", router[0]["address"])
        extra.setdefault("proxy_port", str(ctx["router"]["discovery_port"]))
        extra.setdefault("http_port", str(leader["ports"]["http"]))
        extra.setdefault("send_type", "PUT_ASYNC")
        config["kv_port"] = leader["ports"]["kv"]
        config["kv_buffer_size"] = pool["kv_buffer_size"] or "1e9"
        # Only releases before 0.32 accept these; P2pNccl exists only before 0.24.
        config["kv_rank"] = instance["kv_rank"]
        config["kv_parallel_size"] = instance["kv_parallel_size"]
    if extra:
        config["kv_connector_extra_config"] = extra
    config.update(pool["kv_transfer_config"])
    return config


def _serve_args(ctx: dict, pool: dict, instance: dict, node: dict) -> list[str]:
    p = instance["parallelism"]
    args: list[str] = []
    if node["leader"]:
        args += ["--host", node["address"], "--port", str(node["ports"]["http"])]
    else:
        args += ["--headless"]
    args += ["--served-model-name", ctx["model"]["served_name"]]
    args += ["--tensor-parallel-size", str(p["tensor_parallel_size"])]
    if p["pipeline_parallel_size"] > 1:
        args += ["--pipeline-parallel-size", str(p["pipeline_parallel_size"])]
    if p["data_parallel_size"] > 1:
        args += [
            "--data-parallel-size", str(p["data_parallel_size"]),
            "--data-parallel-size-local", str(node["data_parallel_size_local"]),
        ]
        if not node["leader"]:
            args += ["--data-parallel-start-rank", str(node["data_parallel_start_rank"])]
        args += [
            "--data-parallel-address", instance["nodes"][0]["address"],
            "--data-parallel-rpc-port", str(instance["nodes"][0]["ports"]["dp_rpc"]),
        ]
    if pool["expert_parallel"]:
        args.append("--enable-expert-parallel")
    if pool["enable_eplb"]:
        args.append("--enable-eplb")
        if pool["eplb_config"]:
            args += ["--eplb-config", _json(pool["eplb_config"])]
    if pool["all2all_backend"]:
        args += ["--all2all-backend", pool["all2all_backend"]]
    if pool["enable_dbo"]:
        args.append("--enable-dbo")
        for key in ("dbo_decode_token_threshold", "dbo_prefill_token_threshold"):
            if pool[key] is not None:
                args += ["--" + key.replace("_", "-"), str(pool[key])]
    if pool["moe_backend"]:
        args += ["--moe-backend", pool["moe_backend"]]
    if pool["quantization"]:
        args += ["--quantization", pool["quantization"]]
    if pool["kv_cache_dtype"]:
        args += ["--kv-cache-dtype", pool["kv_cache_dtype"]]
    if pool["max_model_len"] is not None:
        args += ["--max-model-len", str(pool["max_model_len"])]
    if pool["gpu_memory_utilization"] is not None:
        args += ["--gpu-memory-utilization", str(pool["gpu_memory_utilization"])]
    if pool["enforce_eager"]:
        args.append("--enforce-eager")
    if pool["max_cudagraph_capture_size"]:
        args += ["--max-cudagraph-capture-size", str(pool["max_cudagraph_capture_size"])]
    if pool["cudagraph_capture_sizes"]:
        args += ["--cudagraph-capture-sizes", *(str(s) for s in pool["cudagraph_capture_sizes"])]
    if pool["compilation_config"]:
        args += ["--compilation-config", _json(pool["compilation_config"])]
    for key in sorted(pool["offload"]):
        value = pool["offload"][key]
        if value in (None, []):
            continue
        flag = "--" + key.replace("_", "-")
        args += [flag, *(str(v) for v in value)] if isinstance(value, list) else [flag, str(value)]
    if pool["trust_remote_code"]:
        args.append("--trust-remote-code")
    args += ["--kv-transfer-config", _json(instance["kv_transfer_config"])]
    args += _flag_args(pool["extra_args"])
    return args


def _node_env(ctx: dict, pool: dict, instance: dict, node: dict) -> dict:
    env = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "VLLM_HOST_IP": node["address"],
    }
    if node["device"] == "cuda":
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in node["gpus"])
    else:
        env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(str(c) for c in node["gpus"])
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
    if ctx["connector_info"]["side_channel"]:
        env["VLLM_NIXL_SIDE_CHANNEL_HOST"] = node["address"]
        env["VLLM_NIXL_SIDE_CHANNEL_PORT"] = str(node["ports"]["nixl_side_channel_base"])
        ucx_dev = ctx["hosts"][node["host"]]["ucx_net_devices"]
        if ucx_dev:
            env["UCX_NET_DEVICES"] = ucx_dev
        if ctx["ucx_tls"]:
            env["UCX_TLS"] = ctx["ucx_tls"]
    for key, value in {**ctx["worker_env"], **pool["env"]}.items():
        env[str(key)] = str(value)
    return dict(sorted(env.items()))


# ----------------------------------------------------------------------------
# The plan
# ----------------------------------------------------------------------------
def _claim(ports: dict, host: str, port: int, owner: str, unit: str) -> None:
    """Record that `unit` listens on `port` of `host`; a second claim is a collision."""
    if not 1 <= port <= 65535:
        raise PlanError(f"host {host}: {owner} would use port {port}, outside 1-65535")
    other = ports.setdefault(host, {}).get(port)
    if other is not None:
        raise PlanError(
            f"port collision on host {host}: port {port} is used by both {other['owner']} and {owner}; "
            "move one of them (pd_pool http_port / nixl_side_channel_port / dp_rpc_port, pd_router, pd_monitoring)"
        )
    ports[host][port] = {"owner": owner, "unit": unit}


def _groups(spec: dict) -> dict:
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


def build_plan(spec: dict) -> dict:
    """Turn a normalized inventory spec into the deployment plan (see module doc)."""
    warnings: list[str] = []
    version, connector, connector_info = _check_version_and_connector(spec, warnings)
    groups = _groups(spec)
    network = cluster_network(spec.get("cluster_cidr"))
    model = normalize(spec.get("model"), MODEL_OPTIONS, "pd_model")
    for key in ("served_name", "path"):
        if not model[key]:
            raise PlanError(f"pd_model.{key} is not set")
    model_profile = None
    if model["profile"] is not None:
        if model["profile"] not in catalog.MODEL_PROFILES:
            raise PlanError(
                f"pd_model.profile {model['profile']!r} is unknown; "
                f"valid: {', '.join(catalog.MODEL_PROFILES)}"
            )
        model_profile = {"name": model["profile"], **catalog.MODEL_PROFILES[model["profile"]]}
    router = normalize(spec.get("router"), ROUTER_OPTIONS, "pd_router")
    for key in ("policy", "prefill_policy", "decode_policy"):
        if router[key] not in catalog.ROUTER_POLICIES:
            raise PlanError(
                f"pd_router.{key} {router[key]!r} is not a vllm-router policy; "
                f"valid: {', '.join(catalog.ROUTER_POLICIES)}"
            )
    _check_flag_map(router["extra_args"], "pd_router.extra_args", ROUTER_FLAGS)
    monitoring = normalize(spec.get("monitoring"), MONITORING_OPTIONS, "pd_monitoring")
    _check_monitoring(monitoring)
    all_hosts = list(dict.fromkeys(h for g in ("prefill", "decode", "router", "monitoring") for h in groups[g]))
    raw_hosts = spec.get("hosts") or {}
    hosts = {h: normalize(raw_hosts.get(h), HOST_OPTIONS, f"host {h}") for h in all_hosts}
    addresses = {h: pick_address(h, hosts[h], network) for h in all_hosts}
    ctx = {
        "connector": connector,
        "connector_info": connector_info,
        "model": model,
        "router": router,
        "hosts": hosts,
        "ucx_tls": spec.get("ucx_tls"),
        "worker_env": dict(spec.get("worker_env") or {}),
        "kv_shared_storage_path": spec.get("kv_shared_storage_path"),
        "vllm": {
            "version": str(spec["vllm_version"]),
            "install_root": _check_install_root(spec.get("vllm_install_root")),
        },
        "router_hosts": [{"host": h, "address": addresses[h]} for h in groups["router"]],
    }
    for key in ctx["worker_env"]:
        if key in PLANNER_ENV:
            raise PlanError(f"pd_worker_env sets {key}, which the planner computes per node; remove it")

    pools = {}
    profiles = {}
    for pool_name in POOLS:
        pool = normalize((spec.get("pools") or {}).get(pool_name), POOL_OPTIONS, f"pd_pool ({pool_name})")
        pools[pool_name] = _check_pool(pool_name, pool, version, connector, model_profile, warnings)
        for host in groups[pool_name]:
            profiles[host] = _host_profile(host, hosts[host])

    # Placement, names and ranks.
    layouts = {}
    for pool_name in POOLS:
        pool = pools[pool_name]
        hosts_of_pool = groups[pool_name]
        placements = _slots(pool_name, pool, hosts_of_pool, profiles)
        capacity_gpus = sum(profiles[h]["gpus"] for h in hosts_of_pool)
        if not placements:
            raise PlanError(
                f"pool {pool_name} has {capacity_gpus} GPUs on {len(hosts_of_pool)} host(s), fewer than "
                f"one instance of {pool['gpus_per_instance']} GPUs; add {pool_name} hosts or shrink gpus_per_instance"
            )
        wanted = pool["instances"]
        if wanted is not None and wanted > len(placements):
            raise PlanError(
                f"pd_pool ({pool_name}).instances is {wanted}, but its {len(hosts_of_pool)} host(s) with "
                f"{capacity_gpus} GPUs hold {len(placements)} instance(s) of {pool['gpus_per_instance']} GPUs; "
                f"add {pool_name} hosts or lower instances"
            )
        chosen = placements[: wanted if wanted is not None else len(placements)]
        used = {h for placement in chosen for h, _ in placement}
        idle = [h for h in hosts_of_pool if h not in used]
        if idle:
            warnings.append(f"pool {pool_name}: host(s) {', '.join(idle)} carry no instance")
        used_gpus = sum(profiles[h]["gpus"] for h in hosts_of_pool if h in used)
        leftover = used_gpus - len(chosen) * pool["gpus_per_instance"]
        if leftover:
            warnings.append(f"pool {pool_name}: {leftover} GPU(s) on used hosts stay idle")
        layouts[pool_name] = chosen

    total = sum(len(layouts[p]) for p in POOLS)
    rank_base = {"prefill": 0, "decode": len(layouts["prefill"])}
    instances = []
    seen_names: dict[str, str] = {}
    seen_ranks: dict[int, str] = {}
    for pool_name in POOLS:
        led_here: dict[str, int] = {}
        capacities: dict[str, dict | None] = {}

        def capacity_for(profile, pool_name=pool_name, capacities=capacities):
            # One estimate per platform in the pool, warnings emitted once.
            if profile["name"] not in capacities:
                capacities[profile["name"]] = _capacity(
                    pool_name, pools[pool_name], profile, model_profile, warnings)
            return capacities[profile["name"]]

        for index, placement in enumerate(layouts[pool_name]):
            leader = placement[0][0]
            position = led_here.get(leader, 0)
            led_here[leader] = position + 1
            explicit_names = hosts[leader]["instance_names"]
            explicit_ranks = hosts[leader]["kv_ranks"]
            name = str(explicit_names[position]) if position < len(explicit_names) else f"{pool_name}-{index}"
            if not re.match(r"^[a-z0-9][a-z0-9-]{0,62}$", name):
                raise PlanError(
                    f"host {leader}: instance name {name!r} is not valid; "
                    "use lowercase letters, digits and '-' (it becomes a unit name and a metrics label)"
                )
            if position < len(explicit_ranks):
                rank = explicit_ranks[position]
                if not isinstance(rank, int) or isinstance(rank, bool) or not 0 <= rank < total:
                    raise PlanError(f"host {leader}: pd_kv_ranks entry {rank!r} must be an integer in 0..{total - 1}")
            else:
                rank = rank_base[pool_name] + index
            if name in seen_names:
                raise PlanError(
                    f"duplicate instance name {name}: on {seen_names[name]} and {leader}; "
                    "names from pd_instance_names must be unique and must not repeat a default <pool>-<index> name"
                )
            if rank in seen_ranks:
                raise PlanError(
                    f"duplicate kv_rank {rank}: instances {seen_ranks[rank]} and {name}; "
                    f"each instance needs its own rank in 0..{total - 1}"
                )
            seen_names[name] = leader
            seen_ranks[rank] = name
            instances.append(_instance(ctx, pool_name, pools[pool_name], index, name, rank, total,
                                       placement, profiles, addresses, capacity_for))

    port_owners: dict[str, dict[int, str]] = {}
    for inst in instances:
        for node in inst["nodes"]:
            owner, unit = inst["name"], inst["unit"]
            ports = node["ports"]
            if node["leader"]:
                _claim(port_owners, node["host"], ports["http"], f"{owner} http", unit)
            if inst["parallelism"]["data_parallel_size"] > 1 and node["leader"]:
                _claim(port_owners, node["host"], ports["dp_rpc"], f"{owner} data-parallel rpc", unit)
            if connector_info["side_channel"]:
                low, high = ports["nixl_side_channel"]
                for port in range(low, high + 1):
                    _claim(port_owners, node["host"], port, f"{owner} nixl side channel", unit)
            if connector == "P2pNcclConnector":
                for port in range(ports["kv"], ports["kv"] + len(node["gpus"])):
                    _claim(port_owners, node["host"], port, f"{owner} p2p nccl kv_port", unit)

    router_plan = _router(ctx, router, instances, groups, addresses, port_owners)
    scrape = _scrape(instances, router_plan, groups, addresses, monitoring, profiles, port_owners)
    imex = _imex_domains(groups, hosts, profiles, addresses)
    host_index = _host_index(instances, router_plan, groups, addresses, profiles, port_owners, imex, ctx["vllm"])

    return {
        "schema_version": SCHEMA_VERSION,
        "vllm_version": str(spec["vllm_version"]),
        "vllm": ctx["vllm"],
        "connector": connector,
        "model": {
            **model,
            "capacity_profile": model_profile["name"] if model_profile else None,
            # On-disk size for preflight's free-space check (None: unknown model).
            "size_gb": round(model_profile["dense_gb"] + model_profile["experts_gb"], 3) if model_profile else None,
        },
        "cluster_cidr": str(network),
        "kv_parallel_size": total,
        "instances": instances,
        "router": router_plan,
        "scrape": scrape,
        "imex_domains": imex,
        "hosts": host_index,
        "warnings": warnings,
    }


def _instance(ctx, pool_name, pool, index, name, rank, total, placement, profiles, addresses,
              capacity_for) -> dict:
    tp, pp, dp = pool["tensor_parallel_size"], pool["pipeline_parallel_size"], pool["data_parallel_size"]
    g = pool["gpus_per_instance"]
    n_nodes = len(placement)
    if n_nodes > 1 and (dp % n_nodes or tp * pp * (dp // n_nodes) != profiles[placement[0][0]]["gpus"]):
        raise PlanError(
            f"pool {pool_name}: an instance of {g} GPUs spans {n_nodes} hosts, and vLLM spans hosts "
            f"with data parallelism only: data_parallel_size ({dp}) must be a multiple of {n_nodes} and "
            f"tensor_parallel_size x pipeline_parallel_size ({tp * pp}) must fit on one host"
        )
    dp_local = dp // n_nodes
    defaults = catalog.DEFAULT_PORTS[pool_name]
    base = {
        "http": pool["http_port"] or defaults["http"],
        "side": pool["nixl_side_channel_port"] or defaults["nixl_side_channel"],
        "rpc": pool["dp_rpc_port"] or defaults["dp_rpc"],
        "kv": pool["kv_port"] or defaults["kv"],
    }
    capacity = capacity_for(profiles[placement[0][0]])
    instance = {
        "name": name,
        "role": pool_name,
        "pool": pool_name,
        "index": index,
        "kv_rank": rank,
        "kv_parallel_size": total,
        "unit": f"vllm-{name}",
        "gpus_total": g,
        "parallelism": {
            "tensor_parallel_size": tp,
            "pipeline_parallel_size": pp,
            "data_parallel_size": dp,
            "data_parallel_size_local": dp_local,
            "expert_parallel": pool["expert_parallel"],
            "nodes": n_nodes,
        },
        "nodes": [],
    }
    for position, (host, slot) in enumerate(placement):
        hprofile = profiles[host]
        start = position * dp_local
        if hprofile["device"] == "cuda":
            devices = list(range(slot * g, slot * g + min(g, hprofile["gpus"])))
        else:
            cores = ctx["hosts"][host]["cpu_cores"] or list(range(hprofile["gpus"]))
            if len(cores) < hprofile["gpus"]:
                raise PlanError(
                    f"host {host}: pd_cpu_cores lists {len(cores)} core(s) for {hprofile['gpus']} device slot(s)"
                )
            width = min(g, hprofile["gpus"])
            devices = cores[slot * width:(slot + 1) * width]
        side_base = base["side"] + slot * dp
        instance["nodes"].append({
            "host": host,
            "address": addresses[host],
            "leader": position == 0,
            "device": hprofile["device"],
            "gpus": devices,
            "model": ctx["model"]["path"],
            "data_parallel_start_rank": start,
            "data_parallel_size_local": dp_local,
            "ports": {
                "http": base["http"] + slot if position == 0 else None,
                "dp_rpc": base["rpc"] + slot,
                # Each DP rank listens on base + its global DP rank.
                "nixl_side_channel_base": side_base,
                "nixl_side_channel": [side_base + start, side_base + start + dp_local - 1],
                "kv": base["kv"] + slot * g,
            },
        })
    leader = instance["nodes"][0]
    instance["url"] = f"http://{leader['address']}:{leader['ports']['http']}"
    instance["kv_transfer_config"] = _kv_transfer_config(ctx, pool_name, pool, instance, leader)
    # Directories the KV connector writes (ExampleConnector's shared
    # storage), which the unit's read-only sandbox must leave writable.
    shared = (instance["kv_transfer_config"].get("kv_connector_extra_config") or {}).get("shared_storage_path")
    for node in instance["nodes"]:
        node["serve_args"] = _serve_args(ctx, pool, instance, node)
        node["env"] = _node_env(ctx, pool, instance, node)
        launcher = _vllm_host(node["device"], ctx["vllm"]["version"], ctx["vllm"]["install_root"])["launcher"]
        # The unit's whole ExecStart, composed here only.
        node["argv"] = [*launcher, node["model"], *node["serve_args"]]
        node["writable_paths"] = [str(shared)] if shared else []
    if capacity is not None:
        instance["capacity"] = capacity
    return instance


def _router(ctx, router, instances, groups, addresses, port_owners) -> dict:
    mode = ctx["connector_info"]["router_mode"]
    prefill = [i for i in instances if i["role"] == "prefill"]
    decode = [i for i in instances if i["role"] == "decode"]
    for pool, members in (("prefill", prefill), ("decode", decode)):
        policy = router[f"{pool}_policy"] or router["policy"]
        # vllm-router refuses to start otherwise ("Power-of-two policy for
        # decode requires at least 2 decode workers").
        if policy == "power_of_two" and len(members) < 2:
            raise PlanError(
                f"pd_router.{pool}_policy power_of_two needs at least 2 {pool} instances, the plan has "
                f"{len(members)}: use round_robin, cache_aware or random for this pool"
            )
    hosts = []
    for host in groups["router"]:
        address = addresses[host]
        bind = router["bind_address"] or address
        args = ["--host", bind, "--port", str(router["port"]), "--vllm-pd-disaggregation"]
        if mode == "discovery":
            args += ["--vllm-discovery-address", f"{address}:{router['discovery_port']}"]
            _claim(port_owners, host, router["discovery_port"], "router discovery", "vllm-router")
        else:
            for inst in prefill:
                args += ["--prefill", inst["url"], "none"]
            for inst in decode:
                args += ["--decode", inst["url"]]
            args += ["--kv-connector", "nixl"]
        args += [
            "--policy", router["policy"],
            "--prefill-policy", router["prefill_policy"],
            "--decode-policy", router["decode_policy"],
            "--health-check-endpoint", router["health_check_endpoint"],
            "--health-check-interval-secs", str(router["health_check_interval_secs"]),
            "--worker-startup-timeout-secs", str(router["worker_startup_timeout_secs"]),
            "--worker-startup-check-interval", str(router["worker_startup_check_interval"]),
            "--request-timeout-secs", str(router["request_timeout_secs"]),
        ]
        if router["retry_max_retries"] is not None:
            args += ["--retry-max-retries", str(router["retry_max_retries"])]
        args += ["--prometheus-host", address, "--prometheus-port", str(router["metrics_port"])]
        if router["api_key_enabled"]:
            # systemd expands ${VAR} from the unit's root-only EnvironmentFile;
            # the key itself never enters the plan.
            args += ["--api-key", "${" + ROUTER_API_KEY_ENV + "}"]
        args += _flag_args(router["extra_args"])
        _claim(port_owners, host, router["port"], "router api", "vllm-router")
        _claim(port_owners, host, router["metrics_port"], "router metrics", "vllm-router")
        hosts.append({
            "host": host,
            "address": address,
            "url": f"http://{bind if bind not in ('0.0.0.0', '::') else address}:{router['port']}",
            "metrics_url": f"http://{address}:{router['metrics_port']}/metrics",
            "args": args,
        })
    return {
        "mode": mode,
        "args": hosts[0]["args"],
        "url": hosts[0]["url"],
        "hosts": hosts,
        "prefill_urls": [i["url"] for i in prefill],
        "decode_urls": [i["url"] for i in decode],
        # The worker set the router must route to (its API is reconciled to it).
        "workers": {"prefill": [i["url"] for i in prefill], "decode": [i["url"] for i in decode]},
        "api_key_env": ROUTER_API_KEY_ENV if router["api_key_enabled"] else None,
        "settings": router,
    }


def _check_monitoring(monitoring: dict) -> None:
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


def _scrape(instances, router_plan, groups, addresses, monitoring, profiles, port_owners) -> dict:
    """Prometheus jobs: each target carries the labels dashboards and rules
    group by. `instance` is the plan's instance name (stable across scaling),
    not the address Prometheus would default to."""
    jobs = []
    for pool_name in POOLS:
        targets = []
        for inst in instances:
            if inst["role"] != pool_name:
                continue
            leader = inst["nodes"][0]
            targets.append({
                "target": f"{leader['address']}:{leader['ports']['http']}",
                "labels": {
                    "pool": pool_name,
                    "instance": inst["name"],
                    "kv_rank": str(inst["kv_rank"]),
                    "host": leader["host"],
                    "gpus": str(inst["gpus_total"]),
                },
            })
        jobs.append({"job_name": f"vllm-{pool_name}", "metrics_path": "/metrics", "targets": targets})
    jobs.append({
        "job_name": "vllm-router",
        "metrics_path": "/metrics",
        "targets": [
            {"target": f"{h['address']}:{router_plan['settings']['metrics_port']}",
             "labels": {"pool": "router", "instance": f"router-{i}", "host": h["host"]}}
            for i, h in enumerate(router_plan["hosts"])
        ],
    })
    # GPU metrics: one dcgm-exporter per GPU node (lab nodes have no GPU).
    dcgm = []
    for pool_name in POOLS:
        for host in groups[pool_name]:
            if profiles[host]["device"] != "cuda":
                continue
            _claim(port_owners, host, monitoring["dcgm_exporter_port"], "dcgm-exporter", "dcgm-exporter")
            dcgm.append({"target": f"{addresses[host]}:{monitoring['dcgm_exporter_port']}",
                         "labels": {"pool": pool_name, "instance": host, "host": host}})
    jobs.append({"job_name": "dcgm", "metrics_path": "/metrics", "targets": dcgm})
    prom = []
    for host in groups["monitoring"]:
        _claim(port_owners, host, monitoring["prometheus_port"], "prometheus", "prometheus")
        if monitoring["grafana_enabled"]:
            _claim(port_owners, host, monitoring["grafana_port"], "grafana", "grafana-server")
        prom.append({"target": f"{addresses[host]}:{monitoring['prometheus_port']}",
                     "labels": {"pool": "monitoring", "instance": host, "host": host}})
    jobs.append({"job_name": "prometheus", "metrics_path": "/metrics", "targets": prom})
    # Per-pool GPU counts for the tokens-per-GPU rules (Prometheus cannot
    # read a number out of a label).
    gpus = {pool_name: sum(i["gpus_total"] for i in instances if i["role"] == pool_name) for pool_name in POOLS}
    return {"jobs": jobs, "monitoring": monitoring, "pool_gpus": gpus}


def _imex_domains(groups, hosts, profiles, addresses) -> list:
    domains: dict[str, list[str]] = {}
    for host in groups["prefill"] + groups["decode"]:
        if profiles[host]["imex"]:
            domains.setdefault(hosts[host]["imex_domain"] or "default", []).append(host)
    return [
        {"name": name, "hosts": members, "addresses": [addresses[h] for h in members]}
        for name, members in sorted(domains.items())
    ]


def _host_index(instances, router_plan, groups, addresses, profiles, port_owners, imex, vllm) -> dict:
    index: dict[str, dict] = {}
    domain_of = {host: domain["name"] for domain in imex for host in domain["hosts"]}
    workers = set(groups["prefill"] + groups["decode"])
    for host in dict.fromkeys(groups["prefill"] + groups["decode"] + groups["router"] + groups["monitoring"]):
        index[host] = {
            "address": addresses[host],
            "groups": [g for g in ("prefill", "decode", "router", "monitoring") if host in groups[g]],
            "gpu_profile": profiles[host]["name"] if host in profiles else None,
            "device": profiles[host]["device"] if host in profiles else None,
            "gpus": profiles[host]["gpus"] if host in profiles else 0,
            "architecture": profiles[host]["architecture"] if host in profiles else None,
            "units": [],
            "imex_domain": domain_of.get(host),
            "vllm": (_vllm_host(profiles[host]["device"], vllm["version"], vllm["install_root"])
                     if host in workers else None),
            # Every port the deployment listens on here, for preflight.
            "ports": [{"port": port, **claim} for port, claim in sorted(port_owners.get(host, {}).items())],
        }
    for inst in instances:
        for node in inst["nodes"]:
            index[node["host"]]["units"].append(inst["unit"])
    return index
