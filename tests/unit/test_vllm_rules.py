"""vLLM's engine-start rules (read from the 0.33.0 and 0.34.0 wheels' source):
one test per refusal, each with its message."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pd_planner.schema import POOL_OPTIONS, normalize
from pd_planner.vllm_rules import (
    WORKING_ALL2ALL,
    default_scheduler_limits,
    errors_and_warnings,
    multinode_findings,
    pool_findings,
    rules_version,
)

ROOT = Path(__file__).resolve().parents[2]
R1_MAX_LEN = 163840
GB200_GPU_GB = 186
VERSIONS = ("0.33.0", "0.34.0")


def _pool(**values) -> dict:
    base = {"gpus_per_instance": 8, "data_parallel_size": 8, "expert_parallel": True}
    return normalize({**base, **values}, POOL_OPTIONS, "pd_pool (decode)")


def _check(version: str, pool: dict, **kwargs) -> tuple[list[str], list[str]]:
    kwargs.setdefault("model_max_len", R1_MAX_LEN)
    kwargs.setdefault("gpu_memory_gb", GB200_GPU_GB)
    return errors_and_warnings(pool_findings(version, "decode", pool, **kwargs))


def _one_error(version: str, pool: dict, *fragments: str, **kwargs) -> str:
    errors, _ = _check(version, pool, **kwargs)
    assert len(errors) == 1, errors
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("version", VERSIONS)
def test_the_recipes_pool_passes_without_findings(version):
    """allgather_reducescatter, no DBO/EPLB/offload, decode graphs within max_num_seqs."""
    pool = _pool(all2all_backend="allgather_reducescatter", max_model_len=65536,
                 compilation_config={"cudagraph_mode": "FULL_DECODE_ONLY"},
                 extra_args={"--max-num-seqs": 1024})
    assert _check(version, pool) == ([], [])


@pytest.mark.parametrize(("version", "line"), [("0.33.0", "all2all.py:207"), ("0.34.0", "all2all.py:209")])
@pytest.mark.parametrize("backend", ["deepep_high_throughput", "deepep_low_latency"])
def test_deepep_backends_are_refused_naming_the_backends_that_work(version, line, backend):
    message = _one_error(version, _pool(all2all_backend=backend),
                         "pd_pool (decode).all2all_backend", backend, "deep_ep", "does not install",
                         "neither DeepEP nor NVSHMEM", f"vLLM {version} vllm/distributed/device_communicators/{line}")
    assert ", ".join(WORKING_ALL2ALL) in message


@pytest.mark.parametrize("version", VERSIONS)
def test_deepep_v2_is_refused(version):
    _one_error(version, _pool(all2all_backend="deepep_v2"), "deepep_v2 needs deep_ep with the v2 ElasticBuffer",
               "NCCL >= 2.30.4", "allgather_reducescatter")


@pytest.mark.parametrize("version", VERSIONS)
def test_moonep_is_refused(version):
    _one_error(version, _pool(all2all_backend="moonep"), "moonep package", "BF16", "import_utils.py:539")


def test_an_unknown_backend_is_refused_with_the_versions_list():
    message = _one_error("0.33.0", _pool(all2all_backend="deepep"), "'deepep' is not an all2all backend of vLLM 0.33.0",
                         "valid: naive, pplx, deepep_high_throughput")
    assert "passthrough" not in message


def test_mori_is_a_name_in_0_34_only_and_rocm_only_there():
    _one_error("0.33.0", _pool(all2all_backend="mori"), "'mori' is not an all2all backend of vLLM 0.33.0")
    _one_error("0.34.0", _pool(all2all_backend="mori"), "mori runs on AMD ROCm GPUs only", "all2all.py:986")


@pytest.mark.parametrize("backend", ["mori_high_throughput", "mori_low_latency"])
def test_mori_backends_are_rocm_only(backend):
    _one_error("0.33.0", _pool(all2all_backend=backend), f"{backend} runs on AMD ROCm GPUs only", "all2all.py:974")


@pytest.mark.parametrize("backend", ["naive", "pplx"])
def test_removed_backends_are_refused(backend):
    _one_error("0.34.0", _pool(all2all_backend=backend), f"{backend} has been removed",
               "silently runs allgather_reducescatter", "parallel.py:575")


def test_passthrough_is_not_selectable():
    _one_error("0.33.0", _pool(all2all_backend="passthrough"), "passthrough is not selectable",
               "flashinfer_moe_ep_cutedsl", "arg_utils.py:1159")


def test_the_deprecated_flashinfer_alias_warns():
    errors, warnings = _check("0.33.0", _pool(all2all_backend="flashinfer_all2allv"))
    assert errors == []
    assert any("deprecated alias; write flashinfer_nvlink_two_sided" in w for w in warnings)


@pytest.mark.parametrize("backend", ["nixl_ep", "flashinfer_nvlink_two_sided", "flashinfer_nvlink_one_sided"])
def test_installed_but_unmeasured_backends_warn(backend):
    errors, warnings = _check("0.34.0", _pool(all2all_backend=backend))
    assert errors == []
    assert any("untested on hardware" in w and backend in w for w in warnings), warnings


@pytest.mark.parametrize(("version", "line"), [("0.33.0", "vllm.py:2199"), ("0.34.0", "vllm.py:2109")])
def test_dbo_without_a_dbo_backend_is_refused(version, line):
    _one_error(version, _pool(enable_dbo=True), "pd_pool (decode).enable_dbo",
               "deepep_low_latency, deepep_high_throughput, nixl_ep", "got allgather_reducescatter",
               "only nixl_ep has kernels the vllm role installs", line)


def test_dbo_with_a_deepep_backend_fails_on_the_backend():
    errors, _ = _check("0.33.0", _pool(enable_dbo=True, all2all_backend="deepep_low_latency"))
    assert len(errors) == 1
    assert "all2all_backend: deepep_low_latency needs the deep_ep package" in errors[0]


def test_dbo_with_nixl_ep_passes():
    errors, _ = _check("0.33.0", _pool(enable_dbo=True, all2all_backend="nixl_ep"))
    assert errors == []


def test_micro_batching_through_extra_args_counts_as_dbo():
    _one_error("0.34.0", _pool(extra_args={"--ubatch-size": 2}), "extra_args.--ubatch-size",
               "micro-batching needs all2all_backend")


def test_a_self_dispatching_moe_backend_refuses_an_all2all_backend():
    _one_error("0.33.0", _pool(moe_backend="flashinfer_moe_ep_cutedsl", all2all_backend="nixl_ep"),
               "moe_backend flashinfer_moe_ep_cutedsl dispatches and combines itself", "kernel.py:212")


@pytest.mark.parametrize("offload", [
    {"offload_group_size": 2, "offload_num_in_group": 1},
    {"offload_backend": "prefetch", "offload_group_size": 2},
])
@pytest.mark.parametrize("version", VERSIONS)
def test_eplb_with_prefetch_offload_is_refused(version, offload):
    _one_error(version, _pool(enable_eplb=True, offload=offload), "pd_pool (decode).enable_eplb",
               "EPLB cannot be combined with prefetch weight offload", "shared between layers",
               "disagree, with no error", "Disable enable_eplb or the offload", "prefetch.py:563")


def test_eplb_with_uva_offload_only_warns():
    errors, warnings = _check("0.33.0", _pool(enable_eplb=True, offload={"cpu_offload_gb": 40}))
    assert errors == []
    assert any("UVA offload" in w and "writes through" in w for w in warnings)


def test_eplb_without_offload_and_offload_without_eplb_pass():
    assert _check("0.33.0", _pool(enable_eplb=True))[0] == []
    assert _check("0.33.0", _pool(offload={"offload_group_size": 2}))[0] == []


@pytest.mark.parametrize(("version", "line"), [("0.33.0", "scheduler.py:331"), ("0.34.0", "scheduler.py:375")])
def test_fewer_batched_tokens_than_sequences_is_refused(version, line):
    pool = _pool(extra_args={"--max-num-batched-tokens": 512, "--max-num-seqs": 1024})
    _one_error(version, pool, "pd_pool (decode).max_num_batched_tokens", "512 is below max_num_seqs 1024", line)


def test_more_sequences_than_the_default_token_budget_is_refused():
    """max_num_seqs alone, against vLLM's default budget on a 186 GB GPU (16384)."""
    _one_error("0.33.0", _pool(extra_args={"--max-num-seqs": 32768}), "16384 is below max_num_seqs 32768")


def test_default_scheduler_limits_follow_gpu_memory():
    assert default_scheduler_limits(186) == (16384, 1024)
    assert default_scheduler_limits(141) == (8192, 1024)
    assert default_scheduler_limits(None) == (2048, 256)


def test_no_chunked_prefill_needs_a_budget_of_max_model_len():
    pool = _pool(max_model_len="64k", extra_args={"--no-enable-chunked-prefill": True,
                                                  "--max-num-batched-tokens": 32768})
    _one_error("0.33.0", pool, "32768 is below max_model_len 64000 with chunked prefill disabled",
               "scheduler.py:319")


def test_capture_sizes_above_the_token_budget_break_the_pair():
    pool = _pool(cudagraph_capture_sizes=[512, 32768], max_cudagraph_capture_size=32768)
    _one_error("0.33.0", pool, "pd_pool (decode).cudagraph_capture_sizes",
               "sizes above max_num_batched_tokens 16384 are dropped", "vllm.py:2622")


@pytest.mark.parametrize("version", VERSIONS)
def test_full_decode_only_graphs_above_max_num_seqs_warn(version):
    pool = _pool(cudagraph_capture_sizes=[128, 512, 2048], max_cudagraph_capture_size=2048,
                 compilation_config={"cudagraph_mode": "FULL_DECODE_ONLY"}, extra_args={"--max-num-seqs": 1024})
    errors, warnings = _check(version, pool)
    assert errors == []
    assert any("[2048] exceed max_num_seqs 1024" in w and "never captured" in w for w in warnings), warnings


def test_capture_sizes_are_deprecated_in_0_34():
    pool = _pool(cudagraph_capture_sizes=[128, 512])
    assert not any("deprecated" in w for w in _check("0.33.0", pool)[1])
    assert any("decode_cudagraph_capture_request_sizes" in w and "vllm.py:2589" in w
               for w in _check("0.34.0", pool)[1])


def test_0_34_refuses_old_and_new_capture_sizes_together():
    pool = _pool(cudagraph_capture_sizes=[128],
                 compilation_config={"decode_cudagraph_capture_request_sizes": [128]})
    _one_error("0.34.0", pool, "cannot be combined with compilation_config.decode_cudagraph_capture_request_sizes",
               "vllm.py:2725")


def test_eager_pools_skip_the_graph_rules():
    pool = _pool(enforce_eager=True, cudagraph_capture_sizes=[512, 32768], max_cudagraph_capture_size=32768)
    assert _check("0.34.0", pool) == ([], [])


def test_numa_lists_without_binding_are_refused_by_0_33():
    pool = _pool(extra_args={"--numa-bind-nodes": [0, 0, 1, 1]})
    _one_error("0.33.0", pool, "pd_pool (decode).numa_bind", "--numa-bind-nodes needs NUMA binding on",
               "parallel.py:560")


def test_numa_lists_imply_binding_in_0_34_unless_turned_off():
    errors, _ = _check("0.34.0", _pool(extra_args={"--numa-bind-nodes": [0, 1]}))
    assert errors == []
    _one_error("0.34.0", _pool(extra_args={"--numa-bind-nodes": [0, 1], "--no-numa-bind": True}),
               "needs NUMA binding on", "parallel.py:597")


@pytest.mark.parametrize("version", VERSIONS)
def test_numa_binding_passes_because_the_vllm_role_installs_numactl(version):
    """--numa-bind runs the engine under numactl: the rules accept it only
    because roles/vllm installs the command on CUDA nodes."""
    assert _check(version, _pool(extra_args={"--numa-bind": True})) == ([], [])
    defaults = yaml.safe_load((ROOT / "roles/vllm/defaults/main.yml").read_text())
    assert "numactl" in defaults["vllm_system_packages"]["cuda"]


def test_the_vllm_role_installs_no_deepep_so_the_refusal_holds():
    """WORKING_ALL2ALL leaves DeepEP out because the role installs neither
    deep_ep nor NVSHMEM; adding them to the role must revisit the rules."""
    defaults = (ROOT / "roles/vllm/defaults/main.yml").read_text().lower()
    for package in ("deep_ep", "deep-ep", "deepep", "nvshmem"):
        assert package not in defaults
    assert not any(b.startswith("deepep") for b in WORKING_ALL2ALL)


@pytest.mark.parametrize("value", [163841, "161K", "1M"])
@pytest.mark.parametrize(("version", "line"), [("0.33.0", "model.py:2664"), ("0.34.0", "model.py:2708")])
def test_max_model_len_above_the_models_maximum_is_refused(version, line, value):
    _one_error(version, _pool(max_model_len=value), "pd_pool (decode).max_model_len",
               "exceeds the model's maximum context 163840", "Use at most 163840", line)


def test_max_model_len_at_the_maximum_or_unknown_model_passes():
    assert _check("0.33.0", _pool(max_model_len=163840))[0] == []
    assert _check("0.33.0", _pool(max_model_len="160k"))[0] == []
    assert _check("0.33.0", _pool(max_model_len=10**7), model_max_len=None)[0] == []


def test_long_max_model_len_override_only_warns():
    errors, warnings = _check("0.33.0", _pool(max_model_len=200000, env={"VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1"}))
    assert errors == []
    assert any("VLLM_ALLOW_LONG_MAX_MODEL_LEN" in w for w in warnings)


def test_rules_come_from_the_nearest_release_read():
    assert rules_version("0.32.0+cpu") == "0.33.0"
    assert rules_version("0.33.0") == "0.33.0"
    assert rules_version("0.34.0") == "0.34.0"
    assert rules_version("0.35.1") == "0.34.0"
    message = _one_error("0.35.1", _pool(all2all_backend="deepep_low_latency"), "deep_ep")
    assert "rule read from 0.34.0, applied to 0.35.1" in message


def test_cpu_pools_get_only_the_device_independent_rules():
    pool = _pool(all2all_backend="deepep_low_latency", enable_dbo=True, max_model_len=200000)
    errors, _ = _check("0.32.0", pool, device="cpu")
    assert len(errors) == 1
    assert "max_model_len" in errors[0]


def test_the_article_era_sample_pools_are_refused():
    """The sample before this rule set: DeepEP on both pools, DBO, EPLB with prefetch offload."""
    prefill = _pool(gpus_per_instance=2, data_parallel_size=2, enable_eplb=True,
                    all2all_backend="deepep_high_throughput",
                    offload={"offload_backend": "prefetch", "offload_group_size": 2, "offload_num_in_group": 1})
    decode = _pool(enable_eplb=True, enable_dbo=True, all2all_backend="deepep_low_latency")
    prefill_errors, _ = _check("0.33.0", prefill)
    decode_errors, _ = _check("0.33.0", decode)
    assert [e.split(":")[0] for e in prefill_errors] == ["pd_pool (decode).all2all_backend",
                                                         "pd_pool (decode).enable_eplb"]
    assert [e.split(":")[0] for e in decode_errors] == ["pd_pool (decode).all2all_backend"]


def test_an_instance_spanning_trays_without_the_multinode_environment_warns():
    findings = multinode_findings("decode", {"NCCL_CUMEM_ENABLE": "1"}, 2, nvlink_domain=True)
    assert [f.level for f in findings] == ["warning"]
    assert findings[0].message.startswith("pd_pool (decode).env: an instance spans 2 hosts but its workers get no "
                                          "NCCL_MNNVL_ENABLE, GLOO_SOCKET_IFNAME, NCCL_SOCKET_IFNAME")


def test_the_multinode_environment_is_checked_only_where_it_applies():
    full = {"NCCL_MNNVL_ENABLE": "1", "NCCL_CUMEM_ENABLE": "1", "GLOO_SOCKET_IFNAME": "eth0",
            "NCCL_SOCKET_IFNAME": "eth0"}
    assert multinode_findings("decode", full, 2, nvlink_domain=True) == []
    assert multinode_findings("decode", {}, 1, nvlink_domain=True) == []
    # Boards without a shared NVLink domain (HGX over InfiniBand): no MNNVL.
    no_mnnvl = {k: v for k, v in full.items() if k != "NCCL_MNNVL_ENABLE"}
    assert multinode_findings("decode", no_mnnvl, 2, nvlink_domain=False) == []


def test_a_cpu_instance_spanning_nodes_needs_only_the_gloo_interface():
    """The CPU build has no NCCL: only GLOO_SOCKET_IFNAME is asked for."""
    findings = multinode_findings("prefill", {}, 2, nvlink_domain=False, device="cpu")
    assert [f.message.split(";")[0] for f in findings] == [
        "pd_pool (prefill).env: an instance spans 2 hosts but its workers get no GLOO_SOCKET_IFNAME"]
    assert multinode_findings("prefill", {"GLOO_SOCKET_IFNAME": "eth0"}, 2, nvlink_domain=False, device="cpu") == []
