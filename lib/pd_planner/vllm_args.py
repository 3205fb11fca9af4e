"""Rules that depend on the vLLM release, and the argv and environment of a
vLLM node: --kv-transfer-config, serve_args, env, the launcher per flavor.

Every flag and environment variable a worker gets is decided here.
"""

from __future__ import annotations

import json

from . import catalog, vllm_rules
from .cluster import POOLS, Cluster
from .errors import PlanError
from .versions import parse_version, version_in_range

# How a worker starts vLLM, per flavor: argv before the model path. The CPU
# build ships no `vllm` dist metadata, so its `vllm` command cannot start; the
# vllm role installs vllm_serve.py, which runs the same `serve` subcommand (the
# API server module ignores `--headless`, which a multi-node instance's
# followers need).
VLLM_LAUNCHERS = {
    "cuda": ("{venv}/bin/vllm", "serve"),
    "cpu": ("{venv}/bin/python", "{venv}/libexec/vllm_serve.py"),
}
# Fields of --kv-transfer-config the planner computes itself.
KV_TRANSFER_PLANNED = ("kv_connector", "kv_role", "kv_connector_extra_config", "kv_rank", "kv_parallel_size")


def to_json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def check_version_and_connector(spec: dict, warnings: list) -> tuple:
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



def check_kv_transfer_fields(var: str, fields: dict, version: tuple) -> None:
    """Extra kv-transfer-config fields a pool sets, against this release."""
    accepted = set(catalog.KV_TRANSFER_FIELDS)
    if version < parse_version(catalog.KV_TRANSFER_LEGACY_FIELDS_REMOVED_IN):
        accepted |= set(catalog.KV_TRANSFER_LEGACY_FIELDS)
    for key in fields:
        if key not in accepted:
            hint = (
                f" (removed in {catalog.KV_TRANSFER_LEGACY_FIELDS_REMOVED_IN})"
                if key in catalog.KV_TRANSFER_LEGACY_FIELDS else ""
            )
            raise PlanError(
                f"{var}.kv_transfer_config.{key} is not accepted by vLLM {'.'.join(map(str, version))}"
                f"{hint}; valid fields: {', '.join(sorted(accepted))}"
            )
        if key in KV_TRANSFER_PLANNED:
            raise PlanError(
                f"{var}.kv_transfer_config.{key} is computed by the planner; "
                "use pd_kv_connector, kv_role or kv_connector_extra_config instead"
            )


def check_runtime_rules(cluster: Cluster, warnings: list) -> dict:
    """What the pinned vLLM refuses or ignores only when the engine starts
    (vllm_rules.py, read from each release's source): every refusal of every
    pool in one PlanError, the warnings appended. Returns the plan's
    `runtime_rules`: the release whose source the rules came from, for which
    pinned version, and the file:line of each rule."""
    errors: list[str] = []
    version = cluster.vllm["version"]
    max_len = (cluster.model_profile or {}).get("max_model_len")
    for pool_name in POOLS:
        hosts = cluster.groups[pool_name]
        if not hosts:
            continue
        pool = cluster.pools[pool_name]
        profile = cluster.profiles[hosts[0]]
        findings = vllm_rules.pool_findings(
            version, pool_name, pool, model_max_len=max_len,
            gpu_memory_gb=profile["gpu_memory_gb"], device=profile["device"])
        spans = -(-pool["gpus_per_instance"] // profile["gpus"])
        findings += vllm_rules.multinode_findings(
            pool_name, {**cluster.worker_env, **pool["env"]}, spans, bool(profile["imex"]), profile["device"])
        pool_errors, pool_warnings = vllm_rules.errors_and_warnings(findings)
        errors += pool_errors
        warnings.extend(pool_warnings)
    if errors:
        raise PlanError("\n".join(errors))
    read_from = vllm_rules.rules_version(version)
    return {
        "pinned": version,
        "read_from": read_from,
        "sources": {rule: f"vLLM {read_from} {where}" for rule, where in vllm_rules.SOURCES[read_from].items()},
    }


def vllm_host(device: str, version: str, install_root: str) -> dict:
    """How a worker host runs vLLM: flavor, venv, launcher argv and checker."""
    flavor = "cpu" if device == "cpu" else "cuda"
    venv = f"{install_root}/{version}"
    return {
        "flavor": flavor,
        "version": version,
        "venv": venv,
        "launcher": [part.format(venv=venv) for part in VLLM_LAUNCHERS[flavor]],
        "check_args": f"{venv}/bin/vllm-check-args",
    }


def flag_args(flags: dict) -> list[str]:
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
            args.extend([flag, to_json(value)])
        else:
            args.extend([flag, str(value)])
    return args



def kv_transfer_config(cluster: Cluster, pool_name: str, pool: dict, instance: dict, leader: dict) -> dict:
    """The --kv-transfer-config of an instance; legacy fields come from its leader node."""
    connector = cluster.connector
    config: dict = {"kv_connector": connector, "kv_role": pool["kv_role"]}
    if pool["kv_buffer_device"]:
        config["kv_buffer_device"] = pool["kv_buffer_device"]
    extra = dict(pool["kv_connector_extra_config"])
    if connector == "ExampleConnector":
        path = extra.get("shared_storage_path") or cluster.kv_shared_storage_path
        if not path:
            raise PlanError(
                "ExampleConnector needs a directory both pools share: set pd_kv_shared_storage_path "
                f"or pd_pool ({pool_name}).kv_connector_extra_config.shared_storage_path"
            )
        extra["shared_storage_path"] = path
    elif connector == "P2pNcclConnector":
        extra.setdefault("proxy_ip", cluster.addresses[cluster.groups["router"][0]])
        extra.setdefault("proxy_port", str(cluster.router["discovery_port"]))
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


def serve_args(cluster: Cluster, pool: dict, instance: dict, node: dict) -> list[str]:
    p = instance["parallelism"]
    args: list[str] = []
    if node["leader"]:
        args += ["--host", node["address"], "--port", str(node["ports"]["http"])]
    else:
        args += ["--headless"]
    args += ["--served-model-name", cluster.model["served_name"]]
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
            args += ["--eplb-config", to_json(pool["eplb_config"])]
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
        args += ["--compilation-config", to_json(pool["compilation_config"])]
    for key in sorted(pool["offload"]):
        value = pool["offload"][key]
        if value in (None, []):
            continue
        flag = "--" + key.replace("_", "-")
        args += [flag, *(str(v) for v in value)] if isinstance(value, list) else [flag, str(value)]
    if pool["trust_remote_code"]:
        args.append("--trust-remote-code")
    args += ["--kv-transfer-config", to_json(instance["kv_transfer_config"])]
    args += flag_args(pool["extra_args"])
    return args


def node_env(cluster: Cluster, pool: dict, instance: dict, node: dict) -> dict:
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
    if cluster.connector_info["side_channel"]:
        env["VLLM_NIXL_SIDE_CHANNEL_HOST"] = node["address"]
        env["VLLM_NIXL_SIDE_CHANNEL_PORT"] = str(node["ports"]["nixl_side_channel_base"])
        ucx_dev = cluster.hosts[node["host"]]["ucx_net_devices"]
        if ucx_dev:
            env["UCX_NET_DEVICES"] = ucx_dev
        if cluster.ucx_tls:
            env["UCX_TLS"] = cluster.ucx_tls
    for key, value in {**cluster.worker_env, **pool["env"]}.items():
        env[str(key)] = str(value)
    return dict(sorted(env.items()))
