"""Typed option tables for the planner's inputs, with defaults.

Each table maps an option to (accepted types, default, one-line meaning).
`normalize` fills defaults and rejects unknown keys and wrong types with a
message that names the variable and lists what is valid, so a typo in
group_vars fails the plan instead of being silently ignored.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

from .errors import PlanError

INT = (int,)
NUM = (int, float)
STR = (str,)
BOOL = (bool,)
DICT = (dict,)
LIST = (list,)
OPT_INT = (int, type(None))
OPT_NUM = (int, float, type(None))
OPT_STR = (str, type(None))

# Pool shape: group_vars/<pool>.yml `pd_pool`.
POOL_OPTIONS: dict[str, tuple] = {
    "instances": (OPT_INT, None, "instance count; default: as many as the pool's GPUs hold"),
    "gpus_per_instance": (INT, None, "GPUs of one instance (required)"),
    "tensor_parallel_size": (INT, 1, "vLLM -tp"),
    "pipeline_parallel_size": (INT, 1, "vLLM -pp"),
    "data_parallel_size": (INT, 1, "vLLM -dp (spans hosts for instances larger than a host)"),
    "expert_parallel": (BOOL, False, "vLLM --enable-expert-parallel"),
    "kv_role": (OPT_STR, None, "kv_producer / kv_consumer / kv_both; default by pool"),
    "kv_buffer_device": (OPT_STR, None, "cuda (vLLM default) or cpu"),
    "kv_connector_extra_config": (DICT, {}, "merged into kv_connector_extra_config"),
    "kv_transfer_config": (DICT, {}, "extra top-level kv-transfer-config fields"),
    "http_port": (OPT_INT, None, "first HTTP port on a host; +1 per packed instance"),
    "nixl_side_channel_port": (OPT_INT, None, "first NIXL side-channel port; +data_parallel_size per packed instance"),
    "dp_rpc_port": (OPT_INT, None, "first data-parallel RPC port; +1 per packed instance"),
    "kv_port": (OPT_INT, None, "first P2pNccl kv_port (legacy connector only)"),
    "kv_buffer_size": (OPT_STR, None, "P2pNccl kv_buffer_size, e.g. '4e9' (legacy connector only)"),
    "quantization": (OPT_STR, None, "vLLM -q; leave unset to use the checkpoint's own method"),
    "max_model_len": ((int, str, type(None)), None, "vLLM --max-model-len (65536, '64k', 'auto')"),
    "gpu_memory_utilization": (OPT_NUM, None, "vLLM --gpu-memory-utilization (vLLM default 0.92)"),
    "kv_cache_dtype": (OPT_STR, None, "vLLM --kv-cache-dtype, e.g. fp8"),
    "enable_eplb": (BOOL, False, "vLLM --enable-eplb (needs expert_parallel)"),
    "eplb_config": (DICT, {}, "vLLM --eplb-config JSON"),
    "enable_dbo": (BOOL, False, "vLLM --enable-dbo (needs a DeepEP/NIXL-EP all2all_backend)"),
    "all2all_backend": (OPT_STR, None, "vLLM --all2all-backend"),
    "dbo_decode_token_threshold": (OPT_INT, None, "vLLM --dbo-decode-token-threshold"),
    "dbo_prefill_token_threshold": (OPT_INT, None, "vLLM --dbo-prefill-token-threshold"),
    "max_cudagraph_capture_size": (OPT_INT, None, "vLLM --max-cudagraph-capture-size"),
    "cudagraph_capture_sizes": (LIST, [], "vLLM --cudagraph-capture-sizes"),
    "compilation_config": (DICT, {}, "vLLM -cc JSON"),
    "moe_backend": (OPT_STR, None, "vLLM --moe-backend"),
    "enforce_eager": (BOOL, False, "vLLM --enforce-eager"),
    "trust_remote_code": (BOOL, False, "vLLM --trust-remote-code"),
    "offload": (DICT, {}, "weight offload to host memory (see OFFLOAD_OPTIONS)"),
    "runtime_reserve_gb": (NUM, 8, "GB per GPU kept for activations and CUDA graphs in capacity math"),
    "extra_args": (DICT, {}, "escape hatch: {'--flag': value}; true for a bare flag, a list repeats values"),
    "env": (DICT, {}, "extra environment for this pool's workers"),
}

OFFLOAD_OPTIONS: dict[str, tuple] = {
    "offload_backend": (OPT_STR, None, "auto, prefetch or uva"),
    "cpu_offload_gb": (OPT_NUM, None, "UVA offload, GiB per GPU"),
    "cpu_offload_params": (LIST, [], "parameter name segments for UVA offload"),
    "offload_group_size": (OPT_INT, None, "prefetch offload: group every N layers"),
    "offload_num_in_group": (OPT_INT, None, "prefetch offload: layers offloaded per group"),
    "offload_prefetch_step": (OPT_INT, None, "prefetch offload: layers prefetched ahead"),
    "offload_params": (LIST, [], "parameter name segments for prefetch offload"),
}
OFFLOAD_BACKENDS = ("auto", "prefetch", "uva")

# pd_model
MODEL_OPTIONS: dict[str, tuple] = {
    "served_name": (STR, None, "--served-model-name; the name clients send (required)"),
    "path": (STR, None, "checkpoint directory on every node (required)"),
    "profile": (OPT_STR, None, "capacity profile from the catalog, e.g. deepseek_r1_nvfp4"),
    "repo_id": (OPT_STR, None, "hub repository of the checkpoint (model_weights role)"),
    "revision": (OPT_STR, None, "pinned checkpoint revision (model_weights role)"),
}

# pd_router
ROUTER_OPTIONS: dict[str, tuple] = {
    "port": (INT, 8000, "OpenAI API port of the router"),
    "bind_address": (OPT_STR, None, "address the API binds; default the router host's cluster address"),
    "metrics_port": (INT, 29000, "Prometheus metrics port of the router"),
    "discovery_port": (INT, 30001, "ZMQ discovery port (legacy P2pNcclConnector only)"),
    "policy": (STR, "round_robin", "default policy"),
    "prefill_policy": (STR, "cache_aware", "--prefill-policy"),
    "decode_policy": (STR, "round_robin", "--decode-policy (power_of_two needs 2+ decode instances)"),
    "health_check_interval_secs": (INT, 10, "--health-check-interval-secs"),
    "health_check_endpoint": (STR, "/health", "--health-check-endpoint"),
    "worker_startup_timeout_secs": (INT, 1800, "--worker-startup-timeout-secs"),
    "worker_startup_check_interval": (INT, 5, "--worker-startup-check-interval"),
    "request_timeout_secs": (INT, 1800, "--request-timeout-secs"),
    "retry_max_retries": (OPT_INT, 3, "--retry-max-retries"),
    "api_key_enabled": (BOOL, False, "pass an API key (vault variable) to the router and workers"),
    "extra_args": (DICT, {}, "escape hatch: {'--flag': value}"),
}

# pd_monitoring
MONITORING_OPTIONS: dict[str, tuple] = {
    "prometheus_port": (INT, 9090, "Prometheus web port"),
    "scrape_interval": (STR, "15s", "Prometheus scrape and rule evaluation interval"),
    "dcgm_exporter_port": (INT, 9400, "dcgm-exporter port on every GPU node"),
    # The article's published DeepSeek R1 figures on GB200 (tokens/GPU/s),
    # drawn next to the measured ones.
    "tpgs_reference_prefill": (NUM, 26200, "published prefill tokens per GPU per second"),
    "tpgs_reference_decode": (NUM, 10100, "published decode tokens per GPU per second"),
    # Alert thresholds (Prometheus rules are generated from these).
    "alert_prefill_waiting": (NUM, 4, "waiting requests per prefill instance that mean: add prefill"),
    "alert_decode_waiting": (NUM, 4, "waiting requests per decode instance that mean: add decode"),
    "alert_idle_kv_usage": (NUM, 0.5, "KV cache usage below which the other pool counts as idle"),
    "alert_ttft_p99_seconds": (NUM, 10, "time-to-first-token p99 alert threshold"),
    "alert_itl_p99_seconds": (NUM, 0.25, "inter-token latency p99 alert threshold"),
    "alert_kv_cache_usage": (NUM, 0.95, "KV cache usage (0-1) that counts as nearly full"),
    "alert_router_error_ratio": (NUM, 0.05, "router errors / requests that alerts"),
    "alert_for": (STR, "10m", "how long a capacity or latency condition must hold"),
    "alert_down_for": (STR, "2m", "how long a target must be down"),
    "grafana_enabled": (BOOL, True, "deploy Grafana provisioning"),
    "grafana_port": (INT, 3000, "Grafana web port"),
}

# Host-level inventory variables read by the planner (host_vars or groups).
HOST_OPTIONS: dict[str, tuple] = {
    "address": (OPT_STR, None, "pd_address: the host's address in pd_cluster_cidr"),
    "ansible_host": (OPT_STR, None, "ansible_host"),
    "fact_addresses": (LIST, [], "cached ansible_all_ipv4_addresses"),
    "gpu_profile": (OPT_STR, None, "pd_gpu_profile: platform from the catalog"),
    "gpus": (OPT_INT, None, "pd_gpus: device count, overrides the profile's"),
    "cpu_cores": (LIST, [], "pd_cpu_cores: CPU cores standing in for devices (lab)"),
    "imex_domain": (OPT_STR, None, "pd_imex_domain: NVLink/IMEX domain (GB200 rack)"),
    "ucx_net_devices": (OPT_STR, None, "pd_ucx_net_devices: UCX_NET_DEVICES for this host"),
    "instance_names": (LIST, [], "pd_instance_names: explicit names of instances led here"),
    "kv_ranks": (LIST, [], "pd_kv_ranks: explicit kv ranks of instances led here"),
}


def _type_names(types: tuple) -> str:
    names = {int: "integer", float: "number", str: "string", bool: "boolean",
             dict: "mapping", list: "list", type(None): "null"}
    return " or ".join(names[t] for t in types)


def normalize(values: object, options: dict[str, tuple], variable: str) -> dict:
    """Validate a mapping against an option table and fill defaults."""
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise PlanError(f"{variable} must be a mapping, got {type(values).__name__}")
    unknown = sorted(set(values) - set(options))
    if unknown:
        raise PlanError(
            f"{variable} has unknown option(s) {', '.join(unknown)}; "
            f"valid options: {', '.join(sorted(options))}"
        )
    result = {}
    for key, (types, default, _meaning) in options.items():
        value = values[key] if key in values else copy.deepcopy(default)
        # bool is an int in Python; an integer option must not take true/false.
        wrong = not isinstance(value, types) or (
            isinstance(value, bool) and bool not in types
        )
        if wrong:
            raise PlanError(
                f"{variable}.{key} is {value!r} ({type(value).__name__}); "
                f"expected {_type_names(types)}"
            )
        result[key] = value
    return result
