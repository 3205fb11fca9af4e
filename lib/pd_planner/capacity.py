"""Capacity: per-GPU memory of one instance; a layout whose weights cannot
fit, or whose max_model_len exceeds its KV cache, is an error."""

from __future__ import annotations

from .errors import PlanError
from .validate import parse_len


def capacity(pool_name: str, pool: dict, profile: dict, model_profile: dict | None, warnings: list):
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
    max_len = parse_len(pool["max_model_len"], f"{var}.max_model_len")
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
