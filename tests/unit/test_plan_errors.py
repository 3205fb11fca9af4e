"""Every bad input fails in the planner with a message naming the culprit."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from conftest import gb200_pools, make_spec, plan_fails
from pd_planner import PlanError, build_plan
from pd_planner.inventory import spec_from_inventory

# The article's 2-GPU prefill shape (opt-in profile): two instances per tray,
# weight offload; most layout refusals below are phrased for it.
PREFILL_2GPU = Path(__file__).resolve().parents[2] / "inventories/profiles/gb200-prefill-2gpu-offload.yml"


def _pools(**changes) -> dict:
    """The sample's decode pool and the 2-GPU offload prefill profile."""
    pools = gb200_pools()
    pools["prefill"] = yaml.safe_load(PREFILL_2GPU.read_text())["pd_pool"]
    for pool, values in changes.items():
        pools[pool].update(values)
    return pools


def test_gpus_per_instance_that_neither_divides_nor_multiplies():
    spec = make_spec(pools=_pools(prefill={"gpus_per_instance": 3, "data_parallel_size": 3}))
    plan_fails(spec, "gpus_per_instance 3", "neither divides nor is a multiple", "prefill-tray-000", "1, 2, 4")


def test_gpus_per_instance_larger_but_not_a_multiple():
    spec = make_spec(pools=_pools(decode={"gpus_per_instance": 6, "data_parallel_size": 6}))
    plan_fails(spec, "gpus_per_instance 6", "neither divides nor is a multiple", "decode-tray-000")


def test_parallelism_that_does_not_multiply_out():
    spec = make_spec(pools=_pools(prefill={"data_parallel_size": 4}))
    plan_fails(spec, "pd_pool (prefill)", "data_parallel_size 4", "= 4 GPUs", "gpus_per_instance is 2")


def test_pool_with_no_hosts():
    spec = make_spec(2, 0)
    plan_fails(spec, "group decode has no hosts")


def test_pool_with_fewer_gpus_than_one_instance():
    spec = make_spec(2, 1)
    plan_fails(spec, "pool decode has 4 GPUs on 1 host(s)", "fewer than one instance of 8 GPUs")


def test_more_instances_than_the_pool_holds():
    spec = make_spec(pools=_pools(prefill={"instances": 5}))
    plan_fails(spec, "pd_pool (prefill).instances is 5", "hold 4 instance(s)")


def test_host_in_both_pools():
    spec = make_spec()
    spec["groups"]["decode"].insert(0, "prefill-tray-001")
    plan_fails(spec, "host prefill-tray-001 is in both groups prefill and decode")


def test_port_collision_between_http_and_side_channel():
    spec = make_spec(pools=_pools(prefill={"nixl_side_channel_port": 8101}))
    plan_fails(spec, "port collision on host prefill-tray-000", "port 8101")


def test_port_collision_with_router_on_a_shared_host():
    spec = make_spec(router={"port": 8100})
    spec["groups"]["router"] = ["prefill-tray-000"]
    plan_fails(spec, "port collision on host prefill-tray-000", "port 8100", "router api")


def test_duplicate_explicit_names():
    spec = make_spec(pools=_pools())
    spec["hosts"]["prefill-tray-000"]["instance_names"] = ["hot", "hot"]
    plan_fails(spec, "duplicate instance name hot")


def test_explicit_name_repeating_a_default_name():
    spec = make_spec()
    spec["hosts"]["prefill-tray-001"]["instance_names"] = ["prefill-0"]
    plan_fails(spec, "duplicate instance name prefill-0")


def test_more_names_than_instances_led_is_refused():
    spec = make_spec()
    spec["hosts"]["prefill-tray-000"]["instance_names"] = ["hot", "warm", "cold"]
    plan_fails(spec, "host prefill-tray-000: pd_instance_names has 3 entries", "leads 1 prefill instance(s)",
               "give at most 1")


def test_a_name_or_rank_on_a_follower_is_refused():
    spec = make_spec()
    spec["hosts"]["decode-tray-001"]["instance_names"] = ["decode-blue"]
    plan_fails(spec, "host decode-tray-001: pd_instance_names has 1 entries", "leads 0 decode instance(s)",
               "follower of a spanning instance")
    spec = make_spec()
    spec["hosts"]["decode-tray-001"]["kv_ranks"] = [2]
    plan_fails(spec, "host decode-tray-001: pd_kv_ranks has 1 entries", "leads 0 decode")


def test_duplicate_explicit_ranks():
    spec = make_spec()
    spec["hosts"]["decode-tray-000"]["kv_ranks"] = [0]
    plan_fails(spec, "duplicate kv_rank 0", "prefill-0", "decode-0")


def test_rank_out_of_range():
    spec = make_spec()
    spec["hosts"]["decode-tray-000"]["kv_ranks"] = [9]
    plan_fails(spec, "pd_kv_ranks entry 9", "0..2")


def test_unknown_connector():
    plan_fails(make_spec(kv_connector="PyNcclConnector"), "pd_kv_connector 'PyNcclConnector'",
           "NixlConnector, ExampleConnector, P2pNcclConnector")


def test_connector_removed_in_the_pinned_version():
    plan_fails(make_spec(kv_connector="P2pNcclConnector"),
           "P2pNcclConnector is not accepted by vLLM 0.33.0 (removed in 0.24.0)", "NixlConnector")


def test_kv_transfer_field_rejected_by_the_pinned_version():
    spec = make_spec(pools=_pools(decode={"kv_transfer_config": {"kv_buffer_size": "4e9"}}))
    plan_fails(spec, "kv_transfer_config.kv_buffer_size is not accepted by vLLM 0.33.0", "removed in 0.32.0")


def test_kv_rank_through_kv_transfer_config_is_refused_even_when_accepted():
    pools = {"prefill": {"gpus_per_instance": 4, "tensor_parallel_size": 4,
                         "kv_transfer_config": {"kv_rank": 3}},
             "decode": {"gpus_per_instance": 4, "tensor_parallel_size": 4}}
    spec = make_spec(1, 1, pools=pools, vllm_version="0.23.0", model={"served_name": "m", "path": "/m"})
    plan_fails(spec, "kv_transfer_config.kv_rank is computed by the planner")


def test_eplb_without_expert_parallelism():
    spec = make_spec(pools=_pools(prefill={"enable_eplb": True, "offload": {}, "expert_parallel": False,
                                           "all2all_backend": None}))
    plan_fails(spec, "pd_pool (prefill): enable_eplb needs expert parallelism", "expert_parallel: true")


def test_eplb_on_a_single_gpu_instance():
    pools = _pools(prefill={"gpus_per_instance": 1, "data_parallel_size": 1, "offload": {}, "enable_eplb": True})
    plan_fails(make_spec(pools=pools, model={"served_name": "m", "path": "/m"}), "larger than one GPU")


def test_dbo_with_a_backend_that_does_not_allow_it():
    spec = make_spec(pools=_pools(decode={"enable_dbo": True, "all2all_backend": "allgather_reducescatter"}))
    plan_fails(spec, "pd_pool (decode)", "enable_dbo needs all2all_backend in", "nixl_ep", "allgather_reducescatter")


def test_dbo_with_deepep_is_refused_because_deepep_is_not_installed():
    """DBO accepts DeepEP, but the vllm role installs no DeepEP: the runtime
    rules refuse the backend and name the ones that work."""
    spec = make_spec(pools=_pools(decode={"enable_dbo": True, "all2all_backend": "deepep_low_latency"}))
    plan_fails(spec, "pd_pool (decode).all2all_backend: deepep_low_latency needs the deep_ep package",
           "neither DeepEP nor NVSHMEM", "allgather_reducescatter, flashinfer_nvlink_two_sided",
           "(vLLM 0.33.0 vllm/distributed/device_communicators/all2all.py:207)")


@pytest.mark.parametrize(("version", "line"), [("0.33.0", "all2all.py:207"), ("0.34.0", "all2all.py:209")])
def test_deepep_on_both_pools_is_refused_in_one_message_naming_the_release(version, line):
    spec = make_spec(pools=_pools(prefill={"all2all_backend": "deepep_high_throughput"},
                                  decode={"all2all_backend": "deepep_low_latency"}), vllm_version=version)
    message = plan_fails(spec, "pd_pool (prefill).all2all_backend: deepep_high_throughput",
                     "pd_pool (decode).all2all_backend: deepep_low_latency", f"vLLM {version}")
    assert message.count(line) == 2


def test_unknown_all2all_backend_names_the_valid_ones():
    spec = make_spec(pools=_pools(decode={"all2all_backend": "deepep_turbo"}))
    plan_fails(spec, "all2all_backend", "deepep_turbo", "allgather_reducescatter")


def test_eplb_with_prefetch_weight_offload_is_refused():
    """The article's 2-GPU prefill with EPLB: expert rows moved in place in
    buffers the offloader refills from CPU copies (read from the source)."""
    spec = make_spec(pools=_pools(prefill={"enable_eplb": True}))
    plan_fails(spec, "pd_pool (prefill).enable_eplb: EPLB cannot be combined with prefetch weight offload",
           "Disable enable_eplb or the offload", "prefetch.py")


def test_max_model_len_above_the_models_maximum_context():
    spec = make_spec(pools=_pools(decode={"max_model_len": 163841}))
    plan_fails(spec, "pd_pool (decode).max_model_len: 163841 exceeds the model's maximum context 163840",
           "Use at most 163840")


def test_node_without_an_address_in_the_cluster_network():
    spec = make_spec()
    spec["hosts"]["decode-tray-001"]["address"] = "192.168.7.4"
    plan_fails(spec, "host decode-tray-001", "pd_address 192.168.7.4", "not a host address inside", "10.20.0.0/16")


def test_node_with_no_address_at_all():
    spec = make_spec()
    spec["hosts"]["decode-tray-001"] = {"gpu_profile": "gb200_nvl72_tray", "ansible_host": "tray4.example"}
    plan_fails(spec, "host decode-tray-001 has no address in pd_cluster_cidr", "tray4.example", "set pd_address")


def test_wildcard_address_is_refused():
    spec = make_spec(cluster_cidr="0.0.0.0/0")
    spec["hosts"]["decode-tray-001"]["address"] = "0.0.0.0"
    plan_fails(spec, "pd_address 0.0.0.0", "never bind 0.0.0.0")


def test_bad_cluster_cidr():
    plan_fails(make_spec(cluster_cidr="10.20.0.0/33"), "pd_cluster_cidr '10.20.0.0/33'")


def test_unknown_pool_option_is_a_typo_not_ignored():
    spec = make_spec(pools=_pools(prefill={"tensor_paralel_size": 2}))
    plan_fails(spec, "pd_pool (prefill) has unknown option(s) tensor_paralel_size", "tensor_parallel_size")


def test_wrong_type_names_the_variable():
    spec = make_spec(pools=_pools(prefill={"expert_parallel": "yes"}))
    plan_fails(spec, "pd_pool (prefill).expert_parallel is 'yes'", "expected boolean")


def test_boolean_is_not_an_integer():
    spec = make_spec(pools=_pools(prefill={"gpus_per_instance": True}))
    plan_fails(spec, "pd_pool (prefill).gpus_per_instance is True", "expected integer")


def test_extra_args_cannot_override_planner_flags():
    spec = make_spec(pools=_pools(prefill={"extra_args": {"--port": 9000}}))
    plan_fails(spec, "extra_args sets --port, which the planner computes")


def test_env_cannot_override_planner_env():
    spec = make_spec(pools=_pools(decode={"env": {"CUDA_VISIBLE_DEVICES": "0"}}))
    plan_fails(spec, "env sets CUDA_VISIBLE_DEVICES")


def test_fp8_checkpoint_does_not_fit_two_gb200():
    pools = _pools(prefill={"offload": {}})
    spec = make_spec(pools=pools, model={"served_name": "m", "path": "/m", "profile": "deepseek_r1_fp8"})
    plan_fails(spec, "pool prefill: deepseek_r1_fp8 does not fit", "346.0 GB of weights per GPU", "offload")


def test_nvfp4_on_two_gpus_needs_offload():
    plan_fails(make_spec(pools=_pools(prefill={"offload": {}})), "deepseek_r1_nvfp4 does not fit", "209.5 GB")


def test_offload_beyond_host_memory():
    pools = _pools(prefill={"offload": {"offload_group_size": 8, "offload_num_in_group": 8}})
    spec = make_spec(pools=pools, model={"served_name": "m", "path": "/m", "profile": "deepseek_r1_fp8"})
    plan_fails(spec, "offloaded per GPU exceeds 80% of the 240 GB host memory")


def test_max_model_len_beyond_kv_capacity():
    # Within R1's 163840 positions, but 0.414 of 186 GB leaves ~2.4 GB of KV cache.
    spec = make_spec(pools=_pools(decode={"max_model_len": 131072, "gpu_memory_utilization": 0.414}))
    plan_fails(spec, "pool decode: max_model_len", "exceeds the", "vLLM would refuse to start")


def test_quantization_contradicting_the_checkpoint():
    spec = make_spec(pools=_pools(prefill={"quantization": "fp8"}))
    plan_fails(spec, "quantization is 'fp8'", "modelopt_fp4", "leave quantization unset")


def test_unknown_gpu_profile():
    spec = make_spec()
    spec["hosts"]["prefill-tray-000"]["gpu_profile"] = "gb300"
    plan_fails(spec, "host prefill-tray-000: pd_gpu_profile 'gb300' is unknown", "gb200_nvl72_tray")


def test_unknown_router_policy():
    plan_fails(make_spec(router={"decode_policy": "fastest"}), "pd_router.decode_policy 'fastest'", "power_of_two")


def test_power_of_two_with_one_instance_in_the_pool():
    plan_fails(make_spec(1, 2, router={"decode_policy": "power_of_two"}),
           "pd_router.decode_policy power_of_two needs at least 2 decode instances, the plan has 1", "round_robin")


def test_version_that_is_not_a_release():
    plan_fails(make_spec(vllm_version="latest"), "pd_vllm_version is 'latest'")


def test_version_older_than_known():
    plan_fails(make_spec(vllm_version="0.8.5"), "older than 0.10.0")


def test_cudagraph_sizes_that_disagree():
    spec = make_spec(pools=_pools(decode={"max_cudagraph_capture_size": 2048, "cudagraph_capture_sizes": [1, 2, 4]}))
    plan_fails(spec, "max_cudagraph_capture_size 2048 differs from the largest of cudagraph_capture_sizes (4)")


def test_example_connector_without_shared_directory():
    plan_fails(make_spec(kv_connector="ExampleConnector"), "ExampleConnector needs a directory")


# --- the inventory adapter ---------------------------------------------------
def _reader(values: dict):
    return lambda host, variable: values.get(host, {}).get(variable)


def test_cluster_variable_differing_between_hosts():
    groups = {"prefill": ["a"], "decode": ["b"], "router": ["c"]}
    base = {"pd_vllm_version": "0.33.0", "pd_kv_connector": "NixlConnector", "pd_model": {"path": "/m"},
            "pd_cluster_cidr": "10.0.0.0/24"}
    values = {"a": dict(base), "b": {**base, "pd_vllm_version": "0.32.0"}, "c": dict(base)}
    with pytest.raises(PlanError, match="pd_vllm_version differs between hosts a and b"):
        spec_from_inventory(groups, _reader(values))


def test_pool_shape_differing_between_hosts_of_a_pool():
    groups = {"prefill": ["a", "a2"], "decode": ["b"], "router": ["c"]}
    base = {"pd_vllm_version": "0.33.0", "pd_kv_connector": "NixlConnector", "pd_model": {"path": "/m"},
            "pd_cluster_cidr": "10.0.0.0/24"}
    values = {"a": {**base, "pd_pool": {"gpus_per_instance": 2}},
              "a2": {**base, "pd_pool": {"gpus_per_instance": 4}}, "b": dict(base), "c": dict(base)}
    with pytest.raises(PlanError, match=r"pd_pool differs between hosts a and a2; it is the shape of pool prefill"):
        spec_from_inventory(groups, _reader(values))


def test_missing_required_cluster_variable():
    groups = {"prefill": ["a"], "decode": ["b"], "router": ["c"]}
    values = {h: {"pd_kv_connector": "NixlConnector"} for h in "abc"}
    with pytest.raises(PlanError, match="pd_vllm_version is not set; define it in group_vars/all"):
        spec_from_inventory(groups, _reader(values))


def test_errors_leave_the_spec_untouched():
    spec = make_spec(pools=_pools(prefill={"data_parallel_size": 4}))
    before = copy.deepcopy(spec)
    with pytest.raises(PlanError):
        build_plan(spec)
    assert spec == before


# --- IMEX domains and the workload ------------------------------------------
RACK_A = [f"10.20.{10 + i // 250}.{i % 250 + 1}" for i in range(4)] + [f"10.20.40.{i}" for i in range(1, 5)]


def test_instance_spanning_two_imex_domains_is_refused():
    spec = make_spec()
    spec["hosts"]["decode-tray-001"]["imex_domain"] = "nvl72-b"
    plan_fails(spec, "instance decode-0 spans trays of two IMEX domains",
           "decode-tray-000 in nvl72-a, decode-tray-001 in nvl72-b", "share one NVLink domain")


def test_serving_tray_missing_from_its_declared_imex_domain():
    spec = make_spec(imex_domains={"nvl72-a": [a for a in RACK_A if a != "10.20.40.2"]})
    plan_fails(spec, "host decode-tray-001 (10.20.40.2) is not listed in pd_imex_domains.nvl72-a",
           "list every tray of the rack")


def test_pd_imex_domain_not_declared():
    spec = make_spec(imex_domains={"nvl72-b": RACK_A})
    plan_fails(spec, "pd_imex_domain nvl72-a of host prefill-tray-000 is not in pd_imex_domains", "valid: nvl72-b")


@pytest.mark.parametrize(("value", "fragment"), [
    (["10.20.10.1"], "pd_imex_domains is list"),
    ({"nvl72-a": []}, "pd_imex_domains.nvl72-a is []"),
    ({"nvl72-a": ["tray-1"]}, "pd_imex_domains.nvl72-a lists 'tray-1'; valid: IPv4 addresses"),
    ({"nvl72-a": RACK_A, "nvl72-b": ["10.20.10.1"]}, "pd_imex_domains lists 10.20.10.1 in nvl72-a and nvl72-b"),
])
def test_bad_pd_imex_domains(value, fragment):
    plan_fails(make_spec(imex_domains=value), fragment)


@pytest.mark.parametrize("value", [{"isl": 2048}, {"isl": 2048, "osl": 0}, {"isl": "long", "osl": 1}, [2048, 2048]])
def test_bad_pd_workload(value):
    plan_fails(make_spec(workload=value), "pd_workload", "valid:")
