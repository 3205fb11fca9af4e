"""The plan the sample inventories produce, and the layout rules behind it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import make_spec
from pd_planner import build_plan, plan_table

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def _by_name(plan: dict) -> dict:
    return {i["name"]: i for i in plan["instances"]}


def _flag(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


# --- the gb200 sample: the "done when" -----------------------------
def test_gb200_prefill_is_one_dp4_ep_instance_per_tray_without_offload(gb200_spec):
    plan = build_plan(gb200_spec)
    prefill = [i for i in plan["instances"] if i["role"] == "prefill"]
    assert [i["kv_rank"] for i in prefill] == [0, 1]
    assert [i["name"] for i in prefill] == ["prefill-0", "prefill-1"]
    by_host: dict[str, list] = {}
    for inst in prefill:
        assert len(inst["nodes"]) == 1
        node = inst["nodes"][0]
        by_host.setdefault(node["host"], []).append(node["gpus"])
        assert node["env"]["CUDA_VISIBLE_DEVICES"] == ",".join(map(str, node["gpus"]))
        args = node["serve_args"]
        assert _flag(args, "--data-parallel-size") == "4" and "--enable-expert-parallel" in args
        # The measured recipe's flags: no DeepEP, no EPLB, no offload, large steps, NUMA binding.
        assert _flag(args, "--all2all-backend") == "allgather_reducescatter"
        assert _flag(args, "--max-num-batched-tokens") == "65536"
        assert "--enforce-eager" in args and "--numa-bind" in args
        assert not {"--enable-eplb", "--enable-dbo", "--offload-backend", "--trust-remote-code"} & set(args)
    assert by_host == {"gb200-tray-01": [[0, 1, 2, 3]], "gb200-tray-02": [[0, 1, 2, 3]]}


def test_gb200_decode_spans_two_trays_leader_and_headless_follower(gb200_spec):
    plan = build_plan(gb200_spec)
    decode = _by_name(plan)["decode-0"]
    assert decode["kv_rank"] == 2
    assert decode["kv_parallel_size"] == 3 == plan["kv_parallel_size"]
    leader, follower = decode["nodes"]
    assert (leader["host"], follower["host"]) == ("gb200-tray-03", "gb200-tray-04")
    assert leader["leader"] and not follower["leader"]
    assert "--headless" in follower["serve_args"] and "--headless" not in leader["serve_args"]
    assert "--port" not in follower["serve_args"]
    assert _flag(follower["serve_args"], "--data-parallel-start-rank") == "4"
    for node in (leader, follower):
        args = node["serve_args"]
        assert _flag(args, "--data-parallel-size") == "8"
        assert _flag(args, "--data-parallel-size-local") == "4"
        assert _flag(args, "--data-parallel-address") == leader["address"]
        assert _flag(args, "--data-parallel-rpc-port") == str(leader["ports"]["dp_rpc"])
        assert node["gpus"] == [0, 1, 2, 3]
        assert _flag(args, "--all2all-backend") == "allgather_reducescatter"
        assert "--enable-expert-parallel" in args and "--numa-bind" in args
        assert not {"--enable-dbo", "--enable-eplb", "--enforce-eager"} & set(args)
        assert json.loads(_flag(args, "--compilation-config")) == {"cudagraph_mode": "FULL_DECODE_ONLY"}
        assert _flag(args, "--max-num-seqs") == "1024"
        # Multi-tray NCCL: NVLink across trays, cuMem, sockets on the cluster interface.
        assert node["env"]["NCCL_MNNVL_ENABLE"] == node["env"]["NCCL_CUMEM_ENABLE"] == "1"
        assert node["env"]["GLOO_SOCKET_IFNAME"] == node["env"]["NCCL_SOCKET_IFNAME"] == "enP22p3s0f0np0"
    # NIXL side-channel: each DP rank listens on base + its global rank.
    assert leader["ports"]["nixl_side_channel"] == [5700, 5703]
    assert follower["ports"]["nixl_side_channel"] == [5704, 5707]
    assert follower["env"]["VLLM_NIXL_SIDE_CHANNEL_PORT"] == "5700"
    assert follower["env"]["VLLM_NIXL_SIDE_CHANNEL_HOST"] == follower["address"] == "10.20.0.14"


def test_gb200_nixl_config_carries_no_kv_rank(gb200_spec):
    plan = build_plan(gb200_spec)
    assert plan["connector"] == "NixlConnector"
    for inst in plan["instances"]:
        for node in inst["nodes"]:
            config = json.loads(_flag(node["serve_args"], "--kv-transfer-config"))
            assert config["kv_connector"] == "NixlConnector"
            assert config["kv_role"] == {"prefill": "kv_producer", "decode": "kv_consumer"}[inst["role"]]
            assert not {"kv_rank", "kv_parallel_size", "kv_buffer_size", "kv_ip"} & set(config)


def test_gb200_workers_bind_cluster_addresses_never_wildcard(gb200_spec):
    plan = build_plan(gb200_spec)
    for inst in plan["instances"]:
        leader = inst["nodes"][0]
        assert _flag(leader["serve_args"], "--host") == leader["address"]
        assert leader["address"].startswith("10.20.0.")
        assert inst["url"] == f"http://{leader['address']}:{leader['ports']['http']}"
    assert _flag(plan["router"]["args"], "--host") == "10.20.0.5"
    assert "0.0.0.0" not in json.dumps(plan)


def test_gb200_router_learns_every_rank_of_every_leader(gb200_spec):
    plan = build_plan(gb200_spec)
    args = plan["router"]["args"]
    assert "--vllm-pd-disaggregation" in args
    # Discovery zmq (the default): the unit lists no worker; each leader
    # announces every data-parallel rank pinned (url@rank).
    assert "--prefill" not in args and "--decode" not in args
    assert _flag(args, "--vllm-discovery-address") == "10.20.0.5:30001"
    announced = {role: [a for i in plan["instances"] if i["role"] == role for a in i["announce"]["addresses"]]
                 for role in ("prefill", "decode")}
    assert announced["prefill"] == [f"{i['url']}@{r}" for i in plan["instances"] if i["role"] == "prefill"
                                    for r in range(i["parallelism"]["data_parallel_size"])]
    assert announced["decode"] == [f"http://10.20.0.13:8200@{r}" for r in range(8)]
    assert announced == plan["router"]["workers"]
    assert _flag(args, "--kv-connector") == "nixl"
    assert _flag(args, "--prometheus-port") == "29000"
    assert "--api-key" not in args


def test_gb200_scrape_targets_are_leaders_with_labels(gb200_spec):
    plan = build_plan(gb200_spec)
    jobs = {j["job_name"]: j for j in plan["scrape"]["jobs"]}
    assert set(jobs) == {"vllm-prefill", "vllm-decode", "vllm-router", "dcgm", "prometheus"}
    prefill = jobs["vllm-prefill"]["targets"]
    assert [t["target"] for t in prefill] == ["10.20.0.11:8100", "10.20.0.12:8100"]
    assert [t["labels"]["kv_rank"] for t in prefill] == ["0", "1"]
    assert jobs["vllm-decode"]["targets"] == [{
        "target": "10.20.0.13:8200",
        "labels": {"pool": "decode", "instance": "decode-0", "kv_rank": "2", "host": "gb200-tray-03", "gpus": "8"},
    }]
    assert jobs["vllm-router"]["targets"][0]["target"] == "10.20.0.5:29000"
    # Every GPU tray runs a dcgm-exporter, labelled with its pool.
    assert [(t["target"], t["labels"]["pool"]) for t in jobs["dcgm"]["targets"]] == [
        ("10.20.0.11:9400", "prefill"), ("10.20.0.12:9400", "prefill"),
        ("10.20.0.13:9400", "decode"), ("10.20.0.14:9400", "decode")]
    assert plan["scrape"]["pool_gpus"] == {"prefill": 8, "decode": 8}


def test_lab_nodes_have_no_dcgm_target(lab_spec):
    plan = build_plan(lab_spec)
    jobs = {j["job_name"]: j for j in plan["scrape"]["jobs"]}
    assert jobs["dcgm"]["targets"] == []
    assert [t["labels"]["instance"] for t in jobs["vllm-prefill"]["targets"]] == ["prefill-0"]


def test_gb200_imex_domain_lists_every_tray_of_the_rack(gb200_spec):
    """nodes_config.cfg is the rack as pd_imex_domains declares it (18
    trays), not the 4 serving ones."""
    plan = build_plan(gb200_spec)
    assert plan["imex_domains"] == [{
        "name": "nvl72-rack-a",
        "hosts": ["gb200-tray-01", "gb200-tray-02", "gb200-tray-03", "gb200-tray-04"],
        "addresses": [f"10.20.0.{n}" for n in range(11, 29)],
    }]


def test_gb200_capacity_fits_without_offload(gb200_spec):
    """docs/gb200-layout.md's arithmetic: 19 GB dense + 381 GB of NVFP4
    experts over the EP group, 186 GB x 0.90 usable, 8 GB kept."""
    plan = build_plan(gb200_spec)
    prefill = _by_name(plan)["prefill-0"]["capacity"]
    decode = _by_name(plan)["decode-0"]["capacity"]
    assert prefill["weights_per_gpu_gb"] == pytest.approx(19 + 381 / 4, abs=0.1)
    assert prefill["offloaded_per_gpu_gb"] == 0
    assert prefill["kv_cache_per_gpu_gb"] == pytest.approx(45.2, abs=0.1)
    assert decode["weights_per_gpu_gb"] == pytest.approx(19 + 381 / 8, abs=0.1)
    assert decode["offloaded_per_gpu_gb"] == 0
    assert decode["kv_cache_per_gpu_gb"] == pytest.approx(92.8, abs=0.1)


def test_gb200_plan_names_the_vllm_release_its_rules_came_from(gb200_spec):
    plan = build_plan(gb200_spec)
    assert plan["vllm_version"] == "0.34.0"
    rules = plan["runtime_rules"]
    assert (rules["pinned"], rules["read_from"]) == ("0.34.0", "0.34.0")
    assert rules["sources"]["deep_ep"] == "vLLM 0.34.0 vllm/distributed/device_communicators/all2all.py:209"
    assert rules["sources"]["eplb_prefetch"].startswith("vLLM 0.34.0 ")


def test_gb200_plan_sizes_the_pools_for_its_workload(gb200_spec):
    """2K/2K requests on 8 prefill : 8 decode GPUs are decode-bound: the plan
    says so and warns, as make size does."""
    plan = build_plan(gb200_spec)
    sizing = plan["sizing"]
    assert (sizing["prefill_gpus"], sizing["decode_gpus"], sizing["bound_by"]) == (8, 8, "decode")
    assert sizing["balanced_ratio"] == pytest.approx(10100 / 26200, abs=0.001)
    (warning,) = [w for w in plan["warnings"] if w.startswith("pd_workload")]
    assert "2.6x more prefill than 2048/2048-token requests need" in warning


def test_gb200_plan_matches_golden(gb200_spec):
    """Any change to the sample's plan is deliberate: UPDATE_GOLDEN=1 rewrites it."""
    plan = build_plan(gb200_spec)
    golden = GOLDEN / "gb200-plan.json"
    text = json.dumps(plan, indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_plan_is_deterministic(gb200_spec):
    assert json.dumps(build_plan(gb200_spec), sort_keys=True) == json.dumps(build_plan(gb200_spec), sort_keys=True)


# --- the lab sample ----------------------------------------------------------
def test_lab_plan_pins_cores_and_uses_real_nixl_on_cpu(lab_spec):
    plan = build_plan(lab_spec)
    assert plan["vllm_version"] == "0.32.0"
    assert [(i["name"], i["kv_rank"]) for i in plan["instances"]] == [("prefill-0", 0), ("decode-0", 1)]
    cores = []
    for inst in plan["instances"]:
        (node,) = inst["nodes"]
        assert node["device"] == "cpu"
        assert "CUDA_VISIBLE_DEVICES" not in node["env"]
        assert node["env"]["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
        assert node["env"]["UCX_NET_DEVICES"] == "eth0"
        cores.append(node["env"]["VLLM_CPU_OMP_THREADS_BIND"])
        config = json.loads(_flag(node["serve_args"], "--kv-transfer-config"))
        assert config == {"kv_buffer_device": "cpu", "kv_connector": "NixlConnector",
                          "kv_role": {"prefill": "kv_producer", "decode": "kv_consumer"}[inst["role"]]}
        assert _flag(node["serve_args"], "--kv-cache-memory-bytes") == "134217728"
        assert "capacity" not in inst
    assert cores == ["0", "1"]
    assert plan["router"]["url"] == "http://10.89.60.5:8000"


# --- layout rules --------------------------------------------------------------
def _small_pool(gpus: int, **extra) -> dict:
    return {"gpus_per_instance": gpus, "tensor_parallel_size": gpus, **extra}


def test_packed_instances_get_distinct_ports_and_side_channel_ranges():
    pools = {"prefill": _small_pool(1, data_parallel_size=1), "decode": _small_pool(4)}
    plan = build_plan(make_spec(1, 1, pools=pools, model={"served_name": "m", "path": "/m"}))
    prefill = [i for i in plan["instances"] if i["role"] == "prefill"]
    assert [i["nodes"][0]["gpus"] for i in prefill] == [[0], [1], [2], [3]]
    assert [i["nodes"][0]["ports"]["http"] for i in prefill] == [8100, 8101, 8102, 8103]
    assert [i["nodes"][0]["ports"]["nixl_side_channel"] for i in prefill] == [[5600, 5600], [5601, 5601],
                                                                             [5602, 5602], [5603, 5603]]


def test_hgx_profile_packs_eight_gpus_per_host():
    pools = {"prefill": _small_pool(2), "decode": _small_pool(8)}
    spec = make_spec(1, 1, pools=pools, profile="hgx_h200", model={"served_name": "m", "path": "/m"})
    plan = build_plan(spec)
    assert sum(i["role"] == "prefill" for i in plan["instances"]) == 4
    assert plan["imex_domains"] == []
    assert plan["instances"][-1]["nodes"][0]["gpus"] == list(range(8))


def test_explicit_instance_count_leaves_idle_hosts_with_a_warning():
    pools = {"prefill": {**_small_pool(2), "instances": 2}, "decode": _small_pool(4)}
    plan = build_plan(make_spec(2, 1, pools=pools, model={"served_name": "m", "path": "/m"}))
    assert [i["name"] for i in plan["instances"]] == ["prefill-0", "prefill-1", "decode-0"]
    assert any("prefill-tray-001" in w and "no instance" in w for w in plan["warnings"])


def test_host_gpu_override_reduces_slots():
    spec = make_spec(2, 1, pools={"prefill": _small_pool(2), "decode": _small_pool(4)},
                     model={"served_name": "m", "path": "/m"})
    spec["hosts"]["prefill-tray-000"]["gpus"] = 2
    plan = build_plan(spec)
    hosts = [i["nodes"][0]["host"] for i in plan["instances"] if i["role"] == "prefill"]
    assert hosts == ["prefill-tray-000", "prefill-tray-001", "prefill-tray-001"]


def test_explicit_names_and_ranks_are_honoured():
    spec = make_spec(1, 1, pools={"prefill": _small_pool(4), "decode": _small_pool(4)},
                     model={"served_name": "m", "path": "/m"})
    spec["hosts"]["prefill-tray-000"].update(instance_names=["prefill-blue"], kv_ranks=[1])
    spec["hosts"]["decode-tray-000"].update(kv_ranks=[0])
    plan = build_plan(spec)
    assert [(i["name"], i["kv_rank"], i["unit"]) for i in plan["instances"]] == [
        ("prefill-blue", 1, "vllm-prefill-blue"), ("decode-0", 0, "vllm-decode-0")]


def test_example_connector_shares_a_directory():
    pools = {"prefill": _small_pool(4), "decode": _small_pool(4)}
    plan = build_plan(make_spec(1, 1, pools=pools, kv_connector="ExampleConnector",
                                kv_shared_storage_path="/shared/kv", model={"served_name": "m", "path": "/m"}))
    for inst in plan["instances"]:
        node = inst["nodes"][0]
        config = json.loads(_flag(node["serve_args"], "--kv-transfer-config"))
        assert config["kv_connector_extra_config"] == {"shared_storage_path": "/shared/kv"}
        assert "VLLM_NIXL_SIDE_CHANNEL_PORT" not in node["env"]
    # The router pairs instances as for NIXL; they announce themselves.
    assert plan["router"]["mode"] == "discovery" and all("announce" in i for i in plan["instances"])


def test_legacy_p2pnccl_on_old_vllm_gets_ranks_and_router_discovery():
    pools = {"prefill": _small_pool(2), "decode": _small_pool(4)}
    plan = build_plan(make_spec(1, 1, pools=pools, vllm_version="0.23.0", kv_connector="P2pNcclConnector",
                                model={"served_name": "m", "path": "/m"}))
    ranks = []
    for inst in plan["instances"]:
        config = json.loads(_flag(inst["nodes"][0]["serve_args"], "--kv-transfer-config"))
        assert config["kv_connector"] == "P2pNcclConnector"
        assert config["kv_parallel_size"] == 3
        assert config["kv_connector_extra_config"]["proxy_ip"] == "10.20.0.5"
        assert config["kv_connector_extra_config"]["proxy_port"] == "30001"
        assert config["kv_connector_extra_config"]["http_port"] == str(inst["nodes"][0]["ports"]["http"])
        ranks.append(config["kv_rank"])
    assert ranks == [0, 1, 2]
    # Two prefill instances on one tray: kv_port ranges must not overlap.
    kv_ports = [json.loads(_flag(i["nodes"][0]["serve_args"], "--kv-transfer-config"))["kv_port"]
                for i in plan["instances"] if i["role"] == "prefill"]
    assert kv_ports == [14579, 14581]
    args = plan["router"]["args"]
    assert _flag(args, "--vllm-discovery-address") == "10.20.0.5:30001"
    assert "--prefill" not in args


def test_api_key_never_reaches_the_router_command_line():
    # The key travels in the router's root-only env file (OPENAI_API_KEY, what
    # 0.1.17 sends to the workers in PD mode); --api-key did nothing there and
    # systemd would expand it into argv.
    pools = {"prefill": _small_pool(4), "decode": _small_pool(4)}
    plan = build_plan(make_spec(1, 1, pools=pools, router={"api_key_enabled": True},
                                model={"served_name": "m", "path": "/m"}))
    assert "--api-key" not in plan["router"]["args"]
    assert not any("API_KEY" in arg for arg in plan["router"]["args"])
    assert plan["router"]["api_key_env"] == "VLLM_ROUTER_API_KEY"


def test_extra_args_render_as_flags_in_stable_order():
    pools = {"prefill": _small_pool(4, extra_args={"--max-num-seqs": 256, "--enable-prefix-caching": True,
                                                    "--disable-log-stats": False}),
             "decode": _small_pool(4)}
    plan = build_plan(make_spec(1, 1, pools=pools, model={"served_name": "m", "path": "/m"}))
    args = plan["instances"][0]["nodes"][0]["serve_args"]
    assert args[-3:] == ["--enable-prefix-caching", "--max-num-seqs", "256"]
    assert "--disable-log-stats" not in args


def test_table_shows_every_instance_and_the_router(gb200_spec):
    text = plan_table(build_plan(gb200_spec))
    for name in ("prefill-0", "prefill-1", "decode-0", "headless, dp start rank 4", "router (discovery)",
                 "nvl72-rack-a", "KV_TOKENS/DP_RANK"):
        assert name in text
