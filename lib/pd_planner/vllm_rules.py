"""Engine-start rules of vLLM that its argument parser does not enforce.

`vllm serve --help`'s parser accepts every flag below; vLLM refuses (or
silently ignores) them only when the engine config is built or the CUDA
communicator starts, minutes into a model load on a GPU tray. These rules were
read from the source of each release's CUDA wheel (unpacked by
`make vllm-venv` under .venv-vllm/overlay-<version>); every message names the
variable, what would be valid, and the file and line it came from.

    findings = pool_findings("0.34.0", "decode", pool, model_max_len=163840)
    errors = [f for f in findings if f.level == "error"]

`pool` is a normalized pd_pool (schema.POOL_OPTIONS). Settings vLLM takes as
plain flags may come either as pool keys (max_num_seqs, max_num_batched_tokens,
numa_bind, when the schema has them) or through pool.extra_args. Pure
functions: no I/O, no Ansible.
"""

from __future__ import annotations

from dataclasses import dataclass

from .versions import parse_version

# Releases whose source these rules were read from. Older releases are checked
# with the oldest set, newer ones with the newest; the message says which.
RULE_VERSIONS = ("0.33.0", "0.34.0")

# --all2all-backend values (ParallelConfig.All2AllBackend) per release.
ALL2ALL_BACKENDS = {
    "0.33.0": (
        "naive", "pplx", "deepep_high_throughput", "deepep_low_latency", "deepep_v2",
        "mori_high_throughput", "mori_low_latency", "moonep", "nixl_ep", "allgather_reducescatter",
        "flashinfer_all2allv", "flashinfer_nvlink_two_sided", "flashinfer_nvlink_one_sided", "passthrough",
    ),
    "0.34.0": (
        "naive", "pplx", "deepep_high_throughput", "deepep_low_latency", "deepep_v2",
        "mori_high_throughput", "mori_low_latency", "moonep", "mori", "nixl_ep", "allgather_reducescatter",
        "flashinfer_all2allv", "flashinfer_nvlink_two_sided", "flashinfer_nvlink_one_sided", "passthrough",
    ),
}
# Backends whose kernels the vllm role installs on CUDA nodes: the default
# needs nothing; FlashInfer is a hard dependency of the vllm wheel
# (flashinfer-python 0.7.2.post1 in 0.33.0, 0.7.3 in 0.34.0); nixl_ep ships in
# the role's nixl-cu13 1.5.1 wheel (nixl_ep_cu13 with a torch 2.14 build).
WORKING_ALL2ALL = ("allgather_reducescatter", "flashinfer_nvlink_two_sided", "flashinfer_nvlink_one_sided", "nixl_ep")
# Kernels the role does not install, per backend.
MISSING_KERNELS = {
    "deepep_high_throughput": "the deep_ep package (DeepEP, built against NVSHMEM)",
    "deepep_low_latency": "the deep_ep package (DeepEP, built against NVSHMEM)",
    "deepep_v2": "deep_ep with the v2 ElasticBuffer API and NCCL >= 2.30.4",
    "moonep": "the moonep package (and it runs unquantized BF16 models only)",
}
ROCM_ONLY = ("mori_high_throughput", "mori_low_latency", "mori")
REMOVED_ALL2ALL = ("naive", "pplx")
# All2all backends that DBO / micro-batching accepts on CUDA.
DBO_ALL2ALL = ("deepep_low_latency", "deepep_high_throughput", "nixl_ep")
# MoE backends that dispatch and combine themselves (config/kernel.py).
SELF_DISPATCHING_MOE = ("flashinfer_moe_ep_cutedsl", "flashinfer_moe_ep_mega_deep_gemm")

# file:line in each release's wheel, per rule.
SOURCES = {
    "0.33.0": {
        "backends": "vllm/config/parallel.py:45",
        "removed": "vllm/config/parallel.py:537",
        "passthrough": "vllm/engine/arg_utils.py:1159",
        "deep_ep": "vllm/distributed/device_communicators/all2all.py:207",
        "deep_ep_v2": "vllm/distributed/device_communicators/all2all.py:1046",
        "moonep": "vllm/utils/import_utils.py:539",
        "mori": "vllm/distributed/device_communicators/all2all.py:974",
        "alias": "vllm/distributed/device_communicators/cuda_communicator.py:258",
        "dbo": "vllm/config/vllm.py:2199",
        "moe_dispatch": "vllm/config/kernel.py:212",
        "eplb_prefetch": "vllm/model_executor/offloader/prefetch.py:563, :742; "
                         "vllm/distributed/eplb/rebalance_execute.py:510",
        "seqs_tokens": "vllm/config/scheduler.py:331",
        "chunked": "vllm/config/scheduler.py:319",
        "capture_max": "vllm/config/vllm.py:2622",
        "decode_graphs": "vllm/v1/cudagraph_dispatcher.py:219",
        "numa": "vllm/utils/numa_utils.py:521",
        "numa_lists": "vllm/config/parallel.py:560",
        "max_len": "vllm/config/model.py:2664",
    },
    "0.34.0": {
        "backends": "vllm/config/parallel.py:45",
        "removed": "vllm/config/parallel.py:575",
        "passthrough": "vllm/engine/arg_utils.py:1174",
        "deep_ep": "vllm/distributed/device_communicators/all2all.py:209",
        "deep_ep_v2": "vllm/distributed/device_communicators/all2all.py:1193",
        "moonep": "vllm/utils/import_utils.py:539",
        "mori": "vllm/distributed/device_communicators/all2all.py:986",
        "alias": "vllm/distributed/device_communicators/cuda_communicator.py:280",
        "dbo": "vllm/config/vllm.py:2109",
        "moe_dispatch": "vllm/config/kernel.py:212",
        "eplb_prefetch": "vllm/model_executor/offloader/prefetch.py:563, :741; "
                         "vllm/distributed/eplb/rebalance_execute.py:537; vllm/config/vllm.py:1172",
        "seqs_tokens": "vllm/config/scheduler.py:375",
        "chunked": "vllm/config/scheduler.py:363",
        "capture_max": "vllm/config/vllm.py:2521",
        "decode_graphs": "vllm/config/vllm.py:2666",
        "capture_deprecated": "vllm/config/vllm.py:2589",
        "capture_mixed": "vllm/config/vllm.py:2725",
        "numa": "vllm/utils/numa_utils.py:628",
        "numa_lists": "vllm/config/parallel.py:597",
        "max_len": "vllm/config/model.py:2708",
    },
}
# The 0.34.0 compilation_config keys that replace cudagraph_capture_sizes.
SPLIT_CAPTURE_KEYS = (
    "prefill_cudagraph_capture_token_sizes", "max_prefill_cudagraph_capture_tokens",
    "decode_cudagraph_capture_request_sizes", "max_decode_cudagraph_capture_requests",
)
GIB = 2**30


@dataclass(frozen=True)
class Finding:
    """One verdict: level "error" (vLLM would not start, or the plan would lie)
    or "warning"; message names the variable, what is valid, and the source."""

    level: str
    variable: str
    message: str


def rules_version(version: str) -> str:
    """The release whose rules apply to `version` (the nearest one read)."""
    wanted = parse_version(version)
    chosen = RULE_VERSIONS[0]
    for candidate in RULE_VERSIONS:
        if parse_version(candidate) <= wanted:
            chosen = candidate
    return chosen


def default_scheduler_limits(gpu_memory_gb: float | None) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) that `vllm serve` picks on a GPU
    of this many GB (engine/arg_utils.py, the OPENAI_API_SERVER defaults)."""
    if gpu_memory_gb is None:
        return 2048, 256
    gib = gpu_memory_gb * 1e9 / GIB
    if gib >= 160:
        return 16384, 1024
    if gib >= 70:
        return 8192, 1024
    return 2048, 256


def _flag(pool: dict, key: str):
    """A setting from the pool key, else from extra_args (--key-with-dashes)."""
    if pool.get(key) is not None:
        return pool[key]
    return (pool.get("extra_args") or {}).get("--" + key.replace("_", "-"))


def _size(value) -> int | None:
    """A vLLM human-readable integer (65536, '64k', '1M'); None when unset or 'auto'."""
    if value is None or value == "auto" or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip()
    units = {"k": 1000, "K": 1024, "m": 10**6, "M": 2**20}
    if text[-1:] in units and text[:-1].isdigit():
        return int(text[:-1]) * units[text[-1]]
    return int(text) if text.isdigit() else None


class _Collector:
    def __init__(self, version: str, var: str):
        self.rules = rules_version(version)
        self.asked = version
        self.var = var
        self.found: list[Finding] = []

    def add(self, level: str, key: str, text: str, source: str) -> None:
        where = SOURCES[self.rules][source]
        origin = f"vLLM {self.rules} {where}"
        if self.asked.split("+")[0] != self.rules:
            origin += f"; rule read from {self.rules}, applied to {self.asked}"
        variable = f"{self.var}.{key}"
        self.found.append(Finding(level, variable, f"{variable}: {text} ({origin})"))


def _all2all(c: _Collector, pool: dict) -> None:
    backend = pool.get("all2all_backend")
    if backend is None:
        return
    working = ", ".join(WORKING_ALL2ALL)
    if backend not in ALL2ALL_BACKENDS[c.rules]:
        c.add("error", "all2all_backend", f"{backend!r} is not an all2all backend of vLLM {c.rules}; "
              f"valid: {', '.join(b for b in ALL2ALL_BACKENDS[c.rules] if b != 'passthrough')}", "backends")
    elif backend in REMOVED_ALL2ALL:
        c.add("error", "all2all_backend", f"{backend} has been removed; vLLM silently runs "
              f"allgather_reducescatter instead. Use one of: {working}", "removed")
    elif backend == "passthrough":
        c.add("error", "all2all_backend", "passthrough is not selectable on the command line; vLLM binds it "
              f"itself for moe_backend {' or '.join(SELF_DISPATCHING_MOE)}. Use one of: {working}", "passthrough")
    elif backend in MISSING_KERNELS:
        source = {"deepep_v2": "deep_ep_v2", "moonep": "moonep"}.get(backend, "deep_ep")
        c.add("error", "all2all_backend", f"{backend} needs {MISSING_KERNELS[backend]}, which the vllm role "
              f"does not install (neither DeepEP nor NVSHMEM); the engine asserts at startup. "
              f"Backends that work with what the role installs: {working}", source)
    elif backend in ROCM_ONLY:
        c.add("error", "all2all_backend", f"{backend} runs on AMD ROCm GPUs only (MoRI). "
              f"Use one of: {working}", "mori")
    elif backend == "flashinfer_all2allv":
        c.add("warning", "all2all_backend", "flashinfer_all2allv is a deprecated alias; "
              "write flashinfer_nvlink_two_sided", "alias")
    if backend in ("nixl_ep", "flashinfer_nvlink_two_sided", "flashinfer_nvlink_one_sided"):
        c.add("warning", "all2all_backend", f"{backend} is installed by the vllm role but no public "
              "DeepSeek-R1 recipe measured it and it is untested on hardware here; the measured "
              "GB200 recipes use allgather_reducescatter", "backends")


def _dbo(c: _Collector, pool: dict) -> None:
    ubatch = _size(_flag(pool, "ubatch_size")) or 0
    if not (pool.get("enable_dbo") or ubatch > 1):
        return
    backend = pool.get("all2all_backend") or "allgather_reducescatter"
    if backend not in DBO_ALL2ALL:
        key = "enable_dbo" if pool.get("enable_dbo") else "extra_args.--ubatch-size"
        c.add("error", key, f"dual batch overlap / micro-batching needs all2all_backend in "
              f"{', '.join(DBO_ALL2ALL)} on CUDA (got {backend}); of those only nixl_ep has kernels "
              "the vllm role installs. Set all2all_backend: nixl_ep or disable enable_dbo", "dbo")


def _moe_backend(c: _Collector, pool: dict) -> None:
    moe, backend = pool.get("moe_backend"), pool.get("all2all_backend")
    if moe in SELF_DISPATCHING_MOE and backend not in (None, "allgather_reducescatter"):
        c.add("error", "all2all_backend", f"moe_backend {moe} dispatches and combines itself and cannot be "
              f"paired with all2all_backend {backend}; leave all2all_backend unset", "moe_dispatch")


def _eplb_offload(c: _Collector, pool: dict) -> None:
    if not pool.get("enable_eplb"):
        return
    offload = pool.get("offload") or {}
    backend = offload.get("offload_backend") or "auto"
    prefetch = backend == "prefetch" or (backend == "auto" and (offload.get("offload_group_size") or 0) > 0)
    uva = backend == "uva" or (backend == "auto" and not prefetch and (offload.get("cpu_offload_gb") or 0) > 0)
    if prefetch:
        c.add("error", "enable_eplb", "EPLB cannot be combined with prefetch weight offload "
              "(offload.offload_group_size / offload_backend prefetch): offloaded layers' weights live in "
              "GPU buffers shared between layers that the offloader refills from its CPU copy before every "
              "use, while EPLB moves expert rows in place on the GPU; after the first rebalance the expert "
              "map and the weights disagree, with no error. Disable enable_eplb or the offload", "eplb_prefetch")
    elif uva:
        c.add("warning", "enable_eplb", "EPLB with UVA offload (offload.cpu_offload_gb) keeps one copy of each "
              "offloaded weight (a GPU view of host memory), so rebalancing writes through to it; "
              "consistent by reading, but each rebalance moves experts over the host link. Untested on "
              "hardware", "eplb_prefetch")


def _scheduler(c: _Collector, pool: dict, gpu_memory_gb: float | None) -> tuple[int, int]:
    default_tokens, default_seqs = default_scheduler_limits(gpu_memory_gb)
    tokens = _size(_flag(pool, "max_num_batched_tokens"))
    seqs = _size(_flag(pool, "max_num_seqs"))
    tokens_eff = tokens if tokens is not None else default_tokens
    seqs_eff = seqs if seqs is not None else default_seqs
    if (tokens is not None or seqs is not None) and tokens_eff < seqs_eff:
        c.add("error", "max_num_batched_tokens", f"{tokens_eff} is below max_num_seqs {seqs_eff}; vLLM "
              "requires max_num_batched_tokens >= max_num_seqs (raise it, or lower max_num_seqs)", "seqs_tokens")
    extra = pool.get("extra_args") or {}
    no_chunked = extra.get("--no-enable-chunked-prefill") is True or extra.get("--enable-chunked-prefill") is False
    max_len = _size(pool.get("max_model_len"))
    if no_chunked and max_len is not None and tokens_eff < max_len:
        c.add("error", "max_num_batched_tokens", f"{tokens_eff} is below max_model_len {max_len} with chunked "
              "prefill disabled; vLLM refuses this. Raise max_num_batched_tokens to at least max_model_len "
              "or keep chunked prefill on", "chunked")
    return tokens_eff, seqs_eff


def _cudagraphs(c: _Collector, pool: dict, tokens: int, seqs: int) -> None:
    if pool.get("enforce_eager"):
        return
    sizes = [s for s in pool.get("cudagraph_capture_sizes") or [] if isinstance(s, int)]
    largest = pool.get("max_cudagraph_capture_size")
    compilation = pool.get("compilation_config") or {}
    if sizes and largest and max(sizes) > tokens:
        c.add("error", "cudagraph_capture_sizes", f"sizes above max_num_batched_tokens {tokens} are dropped, "
              f"so the largest left differs from max_cudagraph_capture_size {largest} and vLLM refuses "
              f"the pair; keep every size <= {tokens}", "capture_max")
    mode = str(compilation.get("cudagraph_mode", "")).upper()
    legacy = sorted(set(sizes) | ({largest} if largest else set()))
    if mode == "FULL_DECODE_ONLY":
        # Only decode graphs exist in this mode, and a decode batch never
        # holds more than max_num_seqs requests (one token each, no MTP).
        over = [s for s in legacy if s > seqs]
        over += [s for s in compilation.get("decode_cudagraph_capture_request_sizes") or [] if s > seqs]
        if over:
            c.add("warning", "cudagraph_capture_sizes", f"{sorted(set(over))} exceed max_num_seqs {seqs}; with "
                  f"cudagraph_mode FULL_DECODE_ONLY those graphs are never captured or used. Keep sizes "
                  f"<= {seqs}", "decode_graphs")
    if c.rules == "0.34.0" and legacy:
        split = [k for k in SPLIT_CAPTURE_KEYS if k in compilation]
        if split:
            c.add("error", "cudagraph_capture_sizes", "the deprecated cudagraph_capture_sizes / "
                  f"max_cudagraph_capture_size cannot be combined with compilation_config.{split[0]}; set "
                  "only the compilation_config keys", "capture_mixed")
        else:
            c.add("warning", "cudagraph_capture_sizes", "cudagraph_capture_sizes and max_cudagraph_capture_size "
                  "are deprecated; set compilation_config.decode_cudagraph_capture_request_sizes (decode) or "
                  "prefill_cudagraph_capture_token_sizes (prefill) instead", "capture_deprecated")


def _numa(c: _Collector, pool: dict) -> None:
    bind = _flag(pool, "numa_bind")
    extra = pool.get("extra_args") or {}
    if extra.get("--no-numa-bind") is True:
        bind = False
    lists = [k for k in ("--numa-bind-nodes", "--numa-bind-cpus") if extra.get(k) not in (None, False, [])]
    if lists and not bind and (c.rules == "0.33.0" or bind is False):
        c.add("error", "numa_bind", f"extra_args {lists[0]} needs NUMA binding on; vLLM {c.rules} refuses "
              "the lists without it. Set numa_bind: true (extra_args --numa-bind)", "numa_lists")
    # Binding runs every engine process under the numactl command
    # (numa_utils.py); the vllm role installs it on CUDA nodes
    # (vllm_system_packages), so a bound pool needs no warning here.


def _max_len(c: _Collector, pool: dict, model_max_len: int | None) -> None:
    wanted = _size(pool.get("max_model_len"))
    if model_max_len is None or wanted is None or wanted <= model_max_len:
        return
    env = pool.get("env") or {}
    if str(env.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "")).lower() in ("1", "true"):
        c.add("warning", "max_model_len", f"{wanted} exceeds the model's maximum context {model_max_len}; "
              "allowed by VLLM_ALLOW_LONG_MAX_MODEL_LEN, positions beyond it produce NaN with RoPE", "max_len")
        return
    c.add("error", "max_model_len", f"{wanted} exceeds the model's maximum context {model_max_len}; vLLM "
          f"refuses it. Use at most {model_max_len}", "max_len")


def pool_findings(version: str, pool_name: str, pool: dict, *, model_max_len: int | None = None,
                  gpu_memory_gb: float | None = None, device: str = "cuda") -> list[Finding]:
    """Every rule a CUDA pool breaks, in a stable order (errors and warnings).

    device "cpu" (the lab's CPU build) has no all2all kernels, CUDA graphs or
    GPU NUMA topology: only the scheduler and context-length rules apply.
    """
    c = _Collector(str(version), f"pd_pool ({pool_name})")
    if device == "cuda":
        _all2all(c, pool)
        _dbo(c, pool)
        _moe_backend(c, pool)
        _eplb_offload(c, pool)
    tokens, seqs = _scheduler(c, pool, gpu_memory_gb if device == "cuda" else None)
    if device == "cuda":
        _cudagraphs(c, pool, tokens, seqs)
        _numa(c, pool)
    _max_len(c, pool, model_max_len)
    return c.found


# What the measured multi-tray recipes set for an instance spanning trays
# (the vLLM GB200 reproduction, NVIDIA Dynamo's GB200 configs): NCCL over
# multi-node NVLink, cuMem buffers, bootstrap sockets on the cluster NIC.
MULTINODE_ENV = ("NCCL_MNNVL_ENABLE", "NCCL_CUMEM_ENABLE", "GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")


def multinode_findings(pool_name: str, env: dict, hosts_per_instance: int, nvlink_domain: bool,
                       device: str = "cuda") -> list[Finding]:
    """A warning when an instance spanning hosts lacks the multi-node environment.

    `env` is what its workers get from pd_worker_env and the pool's env;
    NCCL_MNNVL_ENABLE is expected only where the hosts share an NVLink
    domain (GB200 trays of one IMEX domain). The CPU build has no NCCL: its
    ranks meet over gloo alone, so only GLOO_SOCKET_IFNAME applies."""
    variable = f"pd_pool ({pool_name}).env"
    if hosts_per_instance < 2:
        return []
    if device == "cpu":
        if "GLOO_SOCKET_IFNAME" in env:
            return []
        return [Finding("warning", variable, (
            f"{variable}: an instance spans {hosts_per_instance} hosts but its workers get no GLOO_SOCKET_IFNAME; "
            "the CPU build's ranks meet over gloo, which otherwise picks the interface of the host name "
            "(set it to the cluster interface in the pool's env or pd_worker_env)"))]
    wanted = [k for k in MULTINODE_ENV if nvlink_domain or k != "NCCL_MNNVL_ENABLE"]
    missing = [k for k in wanted if k not in env]
    if not missing:
        return []
    return [Finding("warning", variable, (
        f"{variable}: an instance spans {hosts_per_instance} hosts but its workers get no {', '.join(missing)}; "
        "the measured multi-tray recipes set NCCL_MNNVL_ENABLE=1 (NVLink across trays), NCCL_CUMEM_ENABLE=1 "
        "and GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME to the cluster interface (set them in the pool's env "
        "or pd_worker_env)"))]


def errors_and_warnings(findings: list[Finding]) -> tuple[list[str], list[str]]:
    """Split findings into (error messages, warning messages)."""
    return ([f.message for f in findings if f.level == "error"],
            [f.message for f in findings if f.level == "warning"])
