"""Static facts the planner reasons with: GPU platforms, vLLM releases, models.

Every table here is data with its source named, so a reviewer can check it
without reading planner logic. Nothing in this module imports Ansible.
"""

from __future__ import annotations

# --------------------------------------------------------------------------
# GPU platforms. `gpus` is the device count of one inventory host (one
# compute tray or one HGX board), `gpu_memory_gb` the HBM of one device in GB
# (10^9 bytes), `host_memory_per_gpu_gb` the CPU memory that weight offload may
# use per device. `device` selects how a worker is pinned: CUDA devices
# through CUDA_VISIBLE_DEVICES, or CPU cores for the GPU-less lab.
# --------------------------------------------------------------------------
GPU_PROFILES: dict[str, dict] = {
    # NVL72 compute tray: 2 superchips, each 1 Grace (480 GB LPDDR5X) + 2 B200.
    "gb200_nvl72_tray": {
        "description": "GB200 NVL72 compute tray (2x Grace + 4x Blackwell)",
        "device": "cuda",
        "gpus": 4,
        "gpu_memory_gb": 186,
        "host_memory_per_gpu_gb": 240,
        "architecture": "aarch64",
        "imex": True,
        "fabric_manager": False,
    },
    "hgx_h200": {
        "description": "HGX H200 8-GPU board",
        "device": "cuda",
        "gpus": 8,
        "gpu_memory_gb": 141,
        "host_memory_per_gpu_gb": 128,
        "architecture": "x86_64",
        "imex": False,
        "fabric_manager": True,
    },
    "hgx_b200": {
        "description": "HGX B200 8-GPU board",
        "device": "cuda",
        "gpus": 8,
        "gpu_memory_gb": 180,
        "host_memory_per_gpu_gb": 128,
        "architecture": "x86_64",
        "imex": False,
        "fabric_manager": True,
    },
    # The lab: one CPU core per node stands in for one device. No capacity
    # math applies (weights are a few MB).
    "cpu_lab": {
        "description": "GPU-less lab node (CPU build of vLLM, one pinned core)",
        "device": "cpu",
        "gpus": 1,
        "gpu_memory_gb": None,
        "host_memory_per_gpu_gb": None,
        "architecture": "x86_64",
        "imex": False,
        "fabric_manager": False,
    },
}

# --------------------------------------------------------------------------
# vLLM releases. Versions are compared numerically (see versions.py).
# Source: shared/research/vllm-ground-truth.md, checked against the 0.32/0.33
# wheels' KVTransferConfig and connector registry.
# --------------------------------------------------------------------------
# Oldest and newest release whose flags and connector rules this table knows.
VLLM_OLDEST_KNOWN = "0.10.0"
VLLM_NEWEST_KNOWN = "0.34.0"

# KVTransferConfig fields. The four legacy fields are rejected
# ("Unexpected keyword argument") from 0.32.0 on.
KV_TRANSFER_FIELDS = (
    "kv_connector",
    "engine_id",
    "kv_buffer_device",
    "kv_role",
    "kv_port",
    "kv_connector_extra_config",
    "kv_connector_module_path",
    "kv_load_failure_policy",
)
KV_TRANSFER_LEGACY_FIELDS = ("kv_buffer_size", "kv_ip", "kv_rank", "kv_parallel_size")
KV_TRANSFER_LEGACY_FIELDS_REMOVED_IN = "0.32.0"

KV_ROLES = ("kv_producer", "kv_consumer", "kv_both")
KV_BUFFER_DEVICES = ("cuda", "cpu")

# Connectors the planner can lay out. `min`/`until` bound the releases that
# register the name (`until` is exclusive). `router_mode` is how vllm-router
# pairs prefill and decode for it.
CONNECTORS: dict[str, dict] = {
    "NixlConnector": {
        "min": "0.10.0",
        "until": None,
        "router_mode": "pd_nixl",
        "side_channel": True,
    },
    # The disk-based debugging connector (formerly SharedStorageConnector).
    # Both instances must see one directory; only whole blocks move.
    "ExampleConnector": {
        "min": "0.32.0",
        "until": None,
        "router_mode": "pd_nixl",
        "side_channel": False,
    },
    # Legacy NCCL transport: removed in 0.24.0. Instances register with the
    # router's ZMQ discovery endpoint (proxy_ip/proxy_port).
    "P2pNcclConnector": {
        "min": "0.10.0",
        "until": "0.24.0",
        "router_mode": "discovery",
        "side_channel": False,
    },
}

# --all2all-backend values that DBO accepts on CUDA (engine config check).
DBO_ALL2ALL_BACKENDS = ("deepep_low_latency", "deepep_high_throughput", "nixl_ep")

# vllm-router 0.1.17 load-balancing policies.
ROUTER_POLICIES = (
    "random",
    "round_robin",
    "cache_aware",
    "kv_aware",
    "power_of_two",
    "consistent_hash",
    "sticky_least_loaded",
)

# --------------------------------------------------------------------------
# Models, for capacity math. Sizes in GB (10^9 bytes) as loaded by vLLM.
# `dense_gb` is replicated on every data-parallel rank (attention, shared
# expert, embeddings, dense layers); `experts_gb` is sharded over the
# expert-parallel group (TP x DP) when expert parallelism is on, over TP
# otherwise. `kv_bytes_per_token` is vLLM's MLA latent cache (576 elements
# per layer x 61 layers), not split by TP.
# `max_model_len` is the model's maximum context; vLLM refuses a larger
# --max-model-len (config/model.py, see vllm_rules.py).
# Source: vllm-ground-truth.md ("DeepSeek-R1 numbers for capacity math").
# --------------------------------------------------------------------------
MODEL_PROFILES: dict[str, dict] = {
    "deepseek_r1_fp8": {
        "description": "DeepSeek-R1 671B, FP8 e4m3 128x128 blocks (original checkpoint)",
        "quantization": "fp8",
        "dense_gb": 19.0,
        "experts_gb": 654.0,
        "layers": 61,
        "routed_experts": 256,
        "max_model_len": 163840,
        "kv_bytes_per_token": {"auto": 70272, "bfloat16": 70272, "fp8": 35136, "fp8_e4m3": 35136},
    },
    "deepseek_r1_nvfp4": {
        "description": "DeepSeek-R1 671B with NVFP4 routed experts (ModelOpt FP4 checkpoint)",
        "quantization": "modelopt_fp4",
        "dense_gb": 19.0,
        "experts_gb": 381.0,
        "layers": 61,
        "routed_experts": 256,
        "max_model_len": 163840,
        "kv_bytes_per_token": {"auto": 70272, "bfloat16": 70272, "fp8": 35136, "fp8_e4m3": 35136},
    },
    # The lab's locally generated random Llama: capacity is never a concern.
    "tiny_llama": {
        "description": "Locally generated 2-layer random Llama for the lab",
        "quantization": None,
        "dense_gb": 0.003,
        "experts_gb": 0.0,
        "layers": 2,
        "routed_experts": 0,
        "kv_bytes_per_token": {"auto": 4096},
    },
}

# Ports the planner hands out unless the inventory says otherwise.
DEFAULT_PORTS = {
    "prefill": {"http": 8100, "nixl_side_channel": 5600, "dp_rpc": 29550, "kv": 14579},
    "decode": {"http": 8200, "nixl_side_channel": 5700, "dp_rpc": 29650, "kv": 14679},
}
