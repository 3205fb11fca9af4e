"""Typed option tables for the planner's inputs, with defaults.

Each table maps an option to (type, default, one-line meaning). A type is a
tuple of Python types (a leaf) or one of the nested forms below (ListOf,
MapOf, AnyOf, Choice, VllmChoice, Options, JSON). `normalize` walks a value
through its table: it fills defaults and rejects unknown keys (with a
did-you-mean), wrong types and unknown enum values at any depth, with one
message that names the full path of the variable and lists what is valid,
so a typo in group_vars fails the plan instead of being silently ignored or
crashing the planner.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from . import catalog, vllm_rules
from .errors import PlanError
from .versions import parse_version

INT = (int,)
NUM = (int, float)
STR = (str,)
BOOL = (bool,)
DICT = (dict,)
LIST = (list,)
OPT_INT = (int, type(None))
OPT_NUM = (int, float, type(None))
OPT_STR = (str, type(None))
SCALAR = (str, int, float, bool)


@dataclass(frozen=True)
class ListOf:
    """A list whose every item has type `item`."""

    item: object


@dataclass(frozen=True)
class MapOf:
    """A mapping with string keys (matching `key_pattern` when given) whose
    every value has type `value`."""

    value: object
    key_pattern: str | None = None
    key_meaning: str = "strings"


@dataclass(frozen=True)
class AnyOf:
    """Any one of several types; `meaning` names the union in messages."""

    types: tuple
    meaning: str = ""


@dataclass(frozen=True)
class Choice:
    """A string from a fixed set (None allowed when nullable)."""

    values: tuple
    nullable: bool = True


@dataclass(frozen=True)
class VllmChoice:
    """A string from the set the pinned vLLM release accepts for `flag`."""

    flag: str
    nullable: bool = True


@dataclass(frozen=True)
class Bounded:
    """A number of `types` within [low, high] (None: unbounded on that side);
    null passes when `types` allows it. Bounds also keep absurd values (a
    billion GPUs on a host) from exhausting the planner."""

    types: tuple
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class Pattern:
    """A string matching `regex` in full (null when nullable); `meaning`
    says what is valid. For values that end up in argv, unit files and
    environment files, where a stray space or newline would break them."""

    regex: str
    meaning: str
    nullable: bool = True


@dataclass(frozen=True, eq=False)
class Options:
    """A nested option table, normalized like a top-level one."""

    table: dict = field(repr=False)
    name: str = ""


class _Json:
    """Any JSON value: mappings with string keys, lists, scalars, null."""

    def __repr__(self) -> str:
        return "JSON"


JSON = _Json()
ABSOLUTE_PATH = Pattern(r"/[^\x00-\x1f]*", "an absolute path (no control characters)")
PORT = Bounded(INT, 1, 65535)
OPT_PORT = Bounded(OPT_INT, 1, 65535)
COUNT = Bounded(INT, 1)
OPT_COUNT = Bounded(OPT_INT, 1)
OPT_SIZE = Bounded(OPT_INT, 0)
ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
# Environment values are written into systemd environment files: strings or
# numbers; a YAML true/false would arrive as Python's True/False.
ENV_MAP = MapOf(AnyOf((Pattern(r"[^\n\r\x00]*", "one line"), (int, float)), "a string (one line) or number"),
                ENV_NAME, "environment variable names")
# extra_args: true for a bare flag, false/null to leave it out, a scalar, a
# list that repeats the flag's values, or a mapping passed as JSON.
FLAG_VALUE = AnyOf(((*SCALAR, type(None)), ListOf((str, int, float)), MapOf(JSON)),
                   "a flag value: true (bare flag), false or null (left out), a string or number, "
                   "a list of them, or a mapping (JSON)")

# Values each vLLM release accepts, read from the Literal types of its CUDA
# wheel's source (unpacked by `make vllm-venv` under .venv-vllm/overlay-<v>);
# tests/unit/test_bad_input.py compares them with that source when present.
# --all2all-backend comes from vllm_rules.ALL2ALL_BACKENDS.
_CACHE_DTYPES = (
    "auto", "float16", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc", "fp8_ds_mla", "nvfp4_ds_mla",
    "turboquant_k8v4", "turboquant_4bit_nc", "turboquant_k3v4_nc", "turboquant_3bit_nc", "octave_k3v4",
    "octave_k3v3", "octave_k3v3_compact", "ultraquant_4bit", "int4_per_token_head", "int8_per_token_head",
    "fp8_per_token_head", "nvfp4", "nvfp4_4over6",
)
_MOE_BACKENDS = (
    "auto", "triton", "batched_triton", "deep_gemm", "deep_gemm_mega_moe", "cutlass", "flashinfer_trtllm",
    "flashinfer_cutlass", "flashinfer_cutedsl", "flashinfer_moe_ep_cutedsl", "flashinfer_b12x", "b12x",
    "flashinfer_moe_ep_mega_deep_gemm", "marlin", "humming", "triton_unfused", "aiter", "aiter_mega_moe",
    "aiter_triton_mxfp4_bf16", "aiter_triton_mxfp4_mxfp4", "flydsl", "hpc", "emulation", "rdna3",
)
_QUANTIZATION_COMMON = (
    "awq", "auto_awq", "fp8", "fbgemm_fp8", "modelopt", "modelopt_fp4", "modelopt_mxfp8", "modelopt_mixed",
    "auto_gptq", "gptq", "gptq_marlin", "awq_marlin", "humming", "compressed-tensors", "experts_int8", "quark",
    "moe_wna16", "torchao", "inc", "mxfp4", "gpt_oss_mxfp4", "deepseek_v4_fp8", "online", "fp8_per_tensor",
    "fp8_per_block", "fp8_per_channel", "int8_per_channel_weight_only", "nvfp4_per_token", "mxfp8",
)
VLLM_CHOICES: dict[str, dict[str, tuple]] = {
    # vllm/config/cache.py:44 CacheDType
    "--kv-cache-dtype": {"0.33.0": _CACHE_DTYPES, "0.34.0": _CACHE_DTYPES},
    # vllm/config/kernel.py:122 MoEBackend
    "--moe-backend": {"0.33.0": _MOE_BACKENDS, "0.34.0": _MOE_BACKENDS},
    # vllm/model_executor/layers/quantization/__init__.py:15 QuantizationMethods
    "--quantization": {
        "0.33.0": tuple(sorted((*_QUANTIZATION_COMMON, "fp_quant"))),
        "0.34.0": tuple(sorted((*_QUANTIZATION_COMMON, "w4afp8", "lut_b_moe", "mxfp4_hadamard32"))),
    },
    "--all2all-backend": dict(vllm_rules.ALL2ALL_BACKENDS),
    # vllm/config/offload.py:12 OffloadBackend
    "--offload-backend": {"0.33.0": ("auto", "uva", "prefetch"), "0.34.0": ("auto", "uva", "prefetch")},
}


def vllm_choices(flag: str, version: str) -> tuple[str, tuple]:
    """(release read, accepted values) of `flag` for `version`: the newest
    release read that is not newer than it (the oldest one for older)."""
    table = VLLM_CHOICES[flag]
    wanted = parse_version(version)
    read = sorted(table, key=parse_version)
    chosen = read[0]
    for candidate in read:
        if parse_version(candidate) <= wanted:
            chosen = candidate
    return chosen, table[chosen]


OFFLOAD_OPTIONS: dict[str, tuple] = {
    "offload_backend": (VllmChoice("--offload-backend"), None, "vLLM default auto"),
    "cpu_offload_gb": (Bounded(OPT_NUM, 0), None, "UVA offload, GiB per GPU"),
    "cpu_offload_params": (ListOf(STR), [], "parameter name segments for UVA offload"),
    "offload_group_size": (OPT_SIZE, None, "prefetch offload: group every N layers"),
    "offload_num_in_group": (OPT_SIZE, None, "prefetch offload: layers offloaded per group"),
    "offload_prefetch_step": (OPT_SIZE, None, "prefetch offload: layers prefetched ahead"),
    "offload_params": (ListOf(STR), [], "parameter name segments for prefetch offload"),
}

# Pool shape: group_vars/<pool>.yml `pd_pool`.
POOL_OPTIONS: dict[str, tuple] = {
    "instances": (OPT_COUNT, None, "instance count; default: as many as the pool's GPUs hold"),
    "gpus_per_instance": (COUNT, None, "GPUs of one instance (required)"),
    "tensor_parallel_size": (COUNT, 1, "vLLM -tp"),
    "pipeline_parallel_size": (COUNT, 1, "vLLM -pp"),
    "data_parallel_size": (COUNT, 1, "vLLM -dp (spans hosts for instances larger than a host)"),
    "expert_parallel": (BOOL, False, "vLLM --enable-expert-parallel"),
    "kv_role": (Choice(("kv_producer", "kv_consumer", "kv_both")), None,
                "default by pool: prefill kv_producer, decode kv_consumer"),
    "kv_buffer_device": (Choice(("cuda", "cpu")), None, "vLLM default cuda"),
    "kv_connector_extra_config": (MapOf(JSON), {}, "merged into kv_connector_extra_config"),
    "kv_transfer_config": (MapOf(JSON), {}, "extra top-level kv-transfer-config fields"),
    "http_port": (OPT_PORT, None, "first HTTP port on a host; +1 per packed instance"),
    "nixl_side_channel_port": (OPT_PORT, None, "first NIXL side-channel port; +data_parallel_size per packed instance"),
    "dp_rpc_port": (OPT_PORT, None, "first data-parallel RPC port; +1 per packed instance"),
    "kv_port": (OPT_PORT, None, "first P2pNccl kv_port (legacy connector only)"),
    "kv_buffer_size": (Pattern(r"[0-9]+(\.[0-9]+)?([eE][0-9]+)?", "a number of bytes such as '4e9'"), None,
                       "P2pNccl kv_buffer_size, e.g. '4e9' (legacy connector only)"),
    "quantization": (VllmChoice("--quantization"), None, "vLLM -q; leave unset to use the checkpoint's own method"),
    "max_model_len": ((int, str, type(None)), None, "vLLM --max-model-len (65536, '64k', 'auto')"),
    "gpu_memory_utilization": (Bounded(OPT_NUM, 0, 1), None, "vLLM --gpu-memory-utilization (vLLM default 0.92)"),
    "kv_cache_dtype": (VllmChoice("--kv-cache-dtype"), None, "vLLM --kv-cache-dtype, e.g. fp8"),
    "enable_eplb": (BOOL, False, "vLLM --enable-eplb (needs expert_parallel)"),
    "eplb_config": (MapOf(JSON), {}, "vLLM --eplb-config JSON"),
    "enable_dbo": (BOOL, False, "vLLM --enable-dbo (needs a DeepEP/NIXL-EP all2all_backend)"),
    "all2all_backend": (VllmChoice("--all2all-backend"), None, "vLLM --all2all-backend"),
    "dbo_decode_token_threshold": (OPT_COUNT, None, "vLLM --dbo-decode-token-threshold"),
    "dbo_prefill_token_threshold": (OPT_COUNT, None, "vLLM --dbo-prefill-token-threshold"),
    "max_cudagraph_capture_size": (OPT_COUNT, None, "vLLM --max-cudagraph-capture-size"),
    "cudagraph_capture_sizes": (ListOf(Bounded(INT, 1)), [], "vLLM --cudagraph-capture-sizes"),
    "compilation_config": (MapOf(JSON), {}, "vLLM -cc JSON"),
    "moe_backend": (VllmChoice("--moe-backend"), None, "vLLM --moe-backend"),
    "enforce_eager": (BOOL, False, "vLLM --enforce-eager"),
    "trust_remote_code": (BOOL, False, "vLLM --trust-remote-code"),
    "offload": (Options(OFFLOAD_OPTIONS, "pd_pool.offload"), {}, "weight offload to host memory (see pd_pool.offload)"),
    "runtime_reserve_gb": (Bounded(NUM, 0), 8, "GB per GPU kept for activations and CUDA graphs in capacity math"),
    "extra_args": (MapOf(FLAG_VALUE), {},
                   "escape hatch: {'--flag': value}; true for a bare flag, a list repeats values"),
    "env": (ENV_MAP, {}, "extra environment for this pool's workers"),
}


# pd_model
MODEL_OPTIONS: dict[str, tuple] = {
    "served_name": (Pattern(r"[^\s]+", "a name without whitespace", nullable=False), None,
                    "--served-model-name; the name clients send (required)"),
    "path": (Pattern(ABSOLUTE_PATH.regex, ABSOLUTE_PATH.meaning, nullable=False), None,
             "checkpoint directory on every node (required)"),
    "profile": (OPT_STR, None, "capacity profile from the catalog, e.g. deepseek_r1_nvfp4"),
    "repo_id": (OPT_STR, None, "hub repository of the checkpoint (model_weights role)"),
    "revision": (OPT_STR, None, "pinned checkpoint revision (model_weights role)"),
}

# pd_router
POLICY = Choice(catalog.ROUTER_POLICIES, nullable=False)
OPT_POLICY = Choice(catalog.ROUTER_POLICIES)
ROUTER_OPTIONS: dict[str, tuple] = {
    "port": (INT, 8000, "OpenAI API port of the router"),
    "bind_address": (OPT_STR, None, "address the API binds; default the router host's cluster address"),
    "metrics_port": (INT, 29000, "Prometheus metrics port of the router"),
    # static: the unit lists every worker (a worker added means a router
    # restart); zmq: workers announce themselves (pd-announce, one small unit
    # per instance, only while /health answers), added and dropped live.
    "discovery": (Choice(("static", "zmq"), nullable=False), "zmq",
                  "how the router learns its workers: static (--prefill/--decode in its unit) or zmq "
                  "(instances announce themselves; scale-out without a router restart)"),
    "discovery_port": (INT, 30001, "ZMQ discovery port (discovery zmq, and legacy P2pNcclConnector)"),
    "announce_interval_secs": (NUM, 1, "discovery zmq: seconds between announcements (the router drops "
                               "an instance about 5 s after its last one)"),
    # vllm-router's --policy only fills in a pool policy left unset: the plan
    # resolves both and passes them, so `policy` is the fallback of each.
    "policy": (OPT_POLICY, None, "both pools' policy where prefill_policy / decode_policy is unset"),
    "prefill_policy": (OPT_POLICY, None, "--prefill-policy (unset: policy, else cache_aware)"),
    "decode_policy": (OPT_POLICY, None,
                      "--decode-policy (unset: policy, else round_robin; power_of_two needs 2+ decode instances)"),
    # A dead worker leaves the pool after health_failure_threshold failed
    # checks: within interval x threshold (+ timeout when it hangs).
    "health_check_interval_secs": (INT, 5, "--health-check-interval-secs"),
    "health_check_timeout_secs": (INT, 5, "--health-check-timeout-secs"),
    "health_failure_threshold": (INT, 2, "--health-failure-threshold: failed checks that eject a worker"),
    "health_check_endpoint": (STR, "/health", "--health-check-endpoint"),
    "worker_startup_timeout_secs": (INT, 1800, "--worker-startup-timeout-secs"),
    "worker_startup_check_interval": (INT, 5, "--worker-startup-check-interval"),
    "request_timeout_secs": (OPT_INT, None, "--request-timeout-secs (whole answer, stream included); "
                             "default: TTFT alert + decode max_model_len x ITL alert threshold (3600 if unknown)"),
    "max_concurrent_requests": (OPT_INT, None, "--max-concurrent-requests; default: decode max_num_seqs "
                                "x data-parallel ranks, summed"),
    "queue_size": (OPT_INT, None, "--queue-size; default 0: beyond max_concurrent_requests, 429 at once"),
    "queue_timeout_secs": (OPT_INT, None, "--queue-timeout-secs (a queued request then gets 408); "
                           "default: the TTFT alert threshold"),
    "api_key_enabled": (BOOL, False, "pass an API key (vault variable) to the router and workers"),
    "extra_args": (MapOf(FLAG_VALUE), {}, "escape hatch: {'--flag': value}"),
}

# pd_monitoring
MONITORING_OPTIONS: dict[str, tuple] = {
    "prometheus_port": (PORT, 9090, "Prometheus web port"),
    "scrape_interval": (STR, "15s", "Prometheus scrape and rule evaluation interval"),
    "dcgm_exporter_port": (PORT, 9400, "dcgm-exporter port on every GPU node"),
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
    # 15s: the rule sees up == 0 at two evaluations in a row (one failed
    # scrape never pages) and, with the 15s scrape interval and
    # Alertmanager's 5s group wait, reaches a receiver within 50 s of a
    # crash (<= scrape + evaluation + for + group wait = 15+15+15+5 s).
    "alert_down_for": (STR, "15s", "how long a target must be down (default: two evaluations; a "
                       "notification within 50 s of a crash at the 15s scrape interval)"),
    "grafana_enabled": (BOOL, True, "deploy Grafana provisioning"),
    "grafana_port": (PORT, 3000, "Grafana web port"),
}

# Cluster-wide scalar settings (group_vars/all), by spec key; whether one is
# required is the inventory reader's concern (inventory.REQUIRED).
SPEC_OPTIONS: dict[str, tuple] = {
    "vllm_version": (OPT_STR, None, "pd_vllm_version: a release such as '0.33.0' (quoted)"),
    "kv_connector": (OPT_STR, None, "pd_kv_connector"),
    "cluster_cidr": (OPT_STR, None, "pd_cluster_cidr: an IPv4 network in CIDR form"),
    "ucx_tls": (Pattern(r"\^?[a-z0-9_]+(,[a-z0-9_]+)*", "a comma-separated UCX transport list such as "
                        "'rc,cuda_copy' (a leading ^ excludes)"), None, "pd_ucx_tls"),
    "kv_shared_storage_path": (ABSOLUTE_PATH, None, "pd_kv_shared_storage_path: an absolute directory"),
    "vllm_install_root": (OPT_STR, None, "pd_vllm_install_root: an absolute directory"),
}

# Host-level inventory variables read by the planner (host_vars or groups).
HOST_OPTIONS: dict[str, tuple] = {
    "address": (OPT_STR, None, "pd_address: the host's address in pd_cluster_cidr"),
    "ansible_host": (OPT_STR, None, "ansible_host"),
    "fact_addresses": (ListOf(STR), [], "cached ansible_all_ipv4_addresses"),
    "gpu_profile": (OPT_STR, None, "pd_gpu_profile: platform from the catalog"),
    "gpus": (Bounded(OPT_INT, 1, 128), None, "pd_gpus: device count, overrides the profile's"),
    "cpu_cores": (ListOf(Bounded(INT, 0)), [], "pd_cpu_cores: CPU cores standing in for devices (lab)"),
    "imex_domain": (Pattern(r"[A-Za-z0-9][A-Za-z0-9_.-]*", "a name of letters, digits, _ . -"), None,
                    "pd_imex_domain: NVLink/IMEX domain (GB200 rack)"),
    "ucx_net_devices": (Pattern(r"[A-Za-z0-9_.:-]+(,[A-Za-z0-9_.:-]+)*",
                                "comma-separated devices such as 'mlx5_0:1,mlx5_1:1'"), None,
                        "pd_ucx_net_devices: UCX_NET_DEVICES for this host"),
    "instance_names": (ListOf(STR), [], "pd_instance_names: explicit names of instances led here"),
    "kv_ranks": (ListOf(Bounded(INT, 0)), [], "pd_kv_ranks: explicit kv ranks of instances led here"),
}


_LEAF_NAMES = {int: "integer", float: "number", str: "string", bool: "boolean",
               dict: "mapping", list: "list", type(None): "null"}


def _type_names(spec) -> str:
    """What a type accepts, in words (error messages and docs/variables.md)."""
    if isinstance(spec, tuple):
        return " or ".join(_LEAF_NAMES[t] for t in spec)
    if isinstance(spec, ListOf):
        return f"list of ({_type_names(spec.item)})"
    if isinstance(spec, MapOf):
        return "mapping" if spec.value is JSON else f"mapping of {spec.key_meaning} to {_type_names(spec.value)}"
    if isinstance(spec, Bounded):
        return _bounded_names(spec)
    if isinstance(spec, Pattern):
        return spec.meaning + (" or null" if spec.nullable else "")
    if isinstance(spec, AnyOf):
        return spec.meaning or " or ".join(_type_names(t) for t in spec.types)
    if isinstance(spec, Choice):
        return "one of " + ", ".join(spec.values) + (" or null" if spec.nullable else "")
    if isinstance(spec, VllmChoice):
        return f"string: a {spec.flag} value of the pinned vLLM" + (" or null" if spec.nullable else "")
    if isinstance(spec, Options):
        return f"mapping (see {spec.name})" if spec.name else "mapping"
    return "JSON value (mapping with string keys, list, string, number, boolean or null)"


def _bounded_names(spec: Bounded) -> str:
    kinds = [t for t in spec.types if t is not type(None)]
    words = _type_names(tuple(kinds))
    if spec.low is not None and spec.high is not None:
        words += f" {spec.low}-{spec.high}"
    elif spec.low is not None:
        words += f", at least {spec.low}"
    elif spec.high is not None:
        words += f", at most {spec.high}"
    return words + (" or null" if type(None) in spec.types else "")


def _wrong(path: str, value: object, spec) -> PlanError:
    return PlanError(f"{path} is {value!r} ({type(value).__name__}); expected {_type_names(spec)}")


def _suggest(word: str, valid) -> str:
    close = difflib.get_close_matches(str(word), [str(v) for v in valid], n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _leaf_ok(value: object, types: tuple) -> bool:
    # bool is an int in Python; an integer option must not take true/false.
    return isinstance(value, types) and not (isinstance(value, bool) and bool not in types)


def check_value(value: object, spec, path: str, context: dict | None = None):
    """`value` checked against the type `spec`; returns it (nested option
    tables normalized, with their defaults). Raises PlanError naming `path`."""
    context = context or {}
    if isinstance(spec, tuple):
        if not _leaf_ok(value, spec):
            raise _wrong(path, value, spec)
        return value
    if isinstance(spec, Bounded):
        if not _leaf_ok(value, spec.types):
            raise _wrong(path, value, spec)
        if value is not None and ((spec.low is not None and value < spec.low)
                                  or (spec.high is not None and value > spec.high)):
            raise PlanError(f"{path} is {value}; valid: {_bounded_names(spec)}")
        return value
    if isinstance(spec, Pattern):
        if value is None and spec.nullable:
            return None
        if not isinstance(value, str):
            raise _wrong(path, value, spec)
        if not re.fullmatch(spec.regex, value):
            raise PlanError(f"{path} is {value!r}; valid: {_type_names(spec)}")
        return value
    if isinstance(spec, ListOf):
        if not isinstance(value, list):
            raise _wrong(path, value, spec)
        return [check_value(item, spec.item, f"{path}[{i}]", context) for i, item in enumerate(value)]
    if isinstance(spec, MapOf):
        if not isinstance(value, Mapping):
            raise _wrong(path, value, spec)
        result = {}
        for key, item in value.items():
            if not isinstance(key, str) or (spec.key_pattern and not re.fullmatch(spec.key_pattern, key)):
                raise PlanError(f"{path} has the key {key!r}; expected {spec.key_meaning} as keys")
            result[key] = check_value(item, spec.value, f"{path}.{key}", context)
        return result
    if isinstance(spec, AnyOf):
        for option in spec.types:
            try:
                return check_value(value, option, path, context)
            except PlanError:
                continue
        raise _wrong(path, value, spec)
    if isinstance(spec, Choice):
        if value is None and spec.nullable:
            return None
        if not isinstance(value, str) or value not in spec.values:
            raise PlanError(f"{path} {value!r} is not valid{_suggest(value, spec.values)}; "
                            f"valid: {', '.join(spec.values)}")
        return value
    if isinstance(spec, VllmChoice):
        if value is None and spec.nullable:
            return None
        if not isinstance(value, str):
            raise _wrong(path, value, spec)
        version = context.get("vllm_version")
        if version is None:  # a caller without a pinned release: type only
            return value
        read, values = vllm_choices(spec.flag, version)
        if value not in values:
            origin = f"vLLM {read}" + ("" if str(version).split("+")[0] == read else f", applied to {version}")
            raise PlanError(f"{path} {value!r} is not a {spec.flag} value of {origin}"
                            f"{_suggest(value, values)}; valid: {', '.join(values)}")
        return value
    if isinstance(spec, Options):
        return normalize(value, spec.table, path, context=context)
    _check_json(value, path)
    return value


def _check_json(value: object, path: str) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise PlanError(f"{path} has the key {key!r}; JSON keys are strings (quote it)")
            _check_json(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{path}[{i}]")
    elif not isinstance(value, (str, int, float, bool, type(None))):
        raise _wrong(path, value, JSON)


def _join(variable: str, key: str) -> str:
    # "host h1:" + "pd_address" reads as "host h1: pd_address".
    return f"{variable} {key}" if variable.endswith(":") else f"{variable}.{key}"


def normalize(values: object, options: dict[str, tuple], variable: str, *,
              context: dict | None = None, names: dict | None = None) -> dict:
    """Validate a mapping against an option table and fill defaults.

    `context` carries {"vllm_version": ...} for VllmChoice options; `names`
    maps an option to the inventory variable it comes from (per-host options).
    """
    names = names or {}
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise PlanError(f"{variable} is {values!r} ({type(values).__name__}); expected a mapping "
                        f"with the options {', '.join(names.get(k, k) for k in options)}")
    unknown = sorted((str(k) for k in set(values) - set(options)), key=str)
    if unknown:
        hints = "".join(_suggest(k, options) for k in unknown[:1])
        raise PlanError(
            f"{variable} has unknown option(s) {', '.join(unknown)}{hints}; "
            f"valid options: {', '.join(sorted(options))}"
        )
    result = {}
    for key, (spec, default, _meaning) in options.items():
        value = values[key] if key in values else copy.deepcopy(default)
        path = _join(variable, names.get(key, key))
        if key not in values and default is None and not _accepts_none(spec):
            # Unset and without a default: the caller reports it as missing.
            result[key] = None
            continue
        result[key] = check_value(value, spec, path, context)
    return result


def _accepts_none(spec) -> bool:
    if isinstance(spec, tuple):
        return type(None) in spec
    if isinstance(spec, Bounded):
        return type(None) in spec.types
    if isinstance(spec, (Choice, VllmChoice, Pattern)):
        return spec.nullable
    return False
