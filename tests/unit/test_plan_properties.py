"""Invariants of the planner over random valid layouts (hypothesis)."""

from __future__ import annotations

import copy

from conftest import make_spec
from hypothesis import given, settings
from hypothesis import strategies as st
from pd_planner import build_plan
from pd_planner.systemd import host_workers

PROFILES = {"gb200_nvl72_tray": 4, "hgx_b200": 8}


@st.composite
def pool_shape(draw, gpus_per_host: int):
    """A valid pool: an instance packs into a host or spans whole hosts."""
    divisors = [d for d in range(1, gpus_per_host + 1) if gpus_per_host % d == 0]
    if draw(st.booleans()):
        gpus = draw(st.sampled_from(divisors))
        tp = draw(st.sampled_from([d for d in divisors if gpus % d == 0]))
    else:
        gpus = gpus_per_host * draw(st.integers(2, 3))
        tp = draw(st.sampled_from(divisors))  # TP stays inside one host
    nodes = max(1, gpus // gpus_per_host)
    return {
        "gpus_per_instance": gpus,
        "tensor_parallel_size": tp,
        "data_parallel_size": gpus // tp,
        "expert_parallel": draw(st.booleans()),
    }, nodes


@st.composite
def cluster(draw):
    profile = draw(st.sampled_from(sorted(PROFILES)))
    gpus = PROFILES[profile]
    (prefill, p_nodes), (decode, d_nodes) = draw(pool_shape(gpus)), draw(pool_shape(gpus))
    p_hosts = p_nodes * draw(st.integers(1, 3))
    d_hosts = d_nodes * draw(st.integers(1, 3))
    spec = make_spec(p_hosts, d_hosts, pools={"prefill": prefill, "decode": decode}, profile=profile,
                     model={"served_name": "m", "path": "/models/m"})
    return spec, gpus, (p_nodes, d_nodes)


def _grow(spec: dict, pool: str, count: int) -> dict:
    grown = copy.deepcopy(spec)
    block = {"prefill": 10, "decode": 40}[pool]
    start = len(grown["groups"][pool])
    for i in range(start, start + count):
        name = f"{pool}-tray-{i:03d}"
        grown["groups"][pool].append(name)
        grown["hosts"][name] = {"address": f"10.20.{block + i // 250}.{i % 250 + 1}",
                                "gpu_profile": grown["hosts"][grown["groups"][pool][0]]["gpu_profile"]}
    return grown


def _placement(instance: dict) -> list:
    return [(n["host"], n["gpus"], n["ports"], n["leader"]) for n in instance["nodes"]]


@settings(max_examples=150, deadline=None)
@given(cluster())
def test_ranks_unique_contiguous_prefill_first(generated):
    spec, _, _ = generated
    plan = build_plan(spec)
    ranks = [i["kv_rank"] for i in plan["instances"]]
    assert sorted(ranks) == list(range(len(ranks)))
    prefill = [i["kv_rank"] for i in plan["instances"] if i["role"] == "prefill"]
    decode = [i["kv_rank"] for i in plan["instances"] if i["role"] == "decode"]
    assert prefill and decode and max(prefill) < min(decode)
    assert all(i["kv_parallel_size"] == len(ranks) for i in plan["instances"])


@settings(max_examples=150, deadline=None)
@given(cluster())
def test_gpu_sets_disjoint_and_in_range(generated):
    spec, gpus_per_host, _ = generated
    plan = build_plan(spec)
    used: dict[str, set] = {}
    for inst in plan["instances"]:
        total = 0
        for node in inst["nodes"]:
            devices = set(node["gpus"])
            assert devices <= set(range(gpus_per_host))
            assert not devices & used.get(node["host"], set()), node["host"]
            used.setdefault(node["host"], set()).update(devices)
            assert node["env"]["CUDA_VISIBLE_DEVICES"] == ",".join(str(g) for g in node["gpus"])
            total += len(devices)
        assert total == inst["gpus_total"]


@settings(max_examples=150, deadline=None)
@given(cluster())
def test_ports_unique_per_host(generated):
    spec, _, _ = generated
    plan = build_plan(spec)
    listening: dict[str, list[int]] = {}
    for inst in plan["instances"]:
        dp = inst["parallelism"]["data_parallel_size"]
        for node in inst["nodes"]:
            ports = listening.setdefault(node["host"], [])
            if node["leader"]:
                ports.append(node["ports"]["http"])
                if dp > 1:
                    ports.append(node["ports"]["dp_rpc"])
            low, high = node["ports"]["nixl_side_channel"]
            base = int(node["env"]["VLLM_NIXL_SIDE_CHANNEL_PORT"])
            assert low == base + node["data_parallel_start_rank"]
            assert high - low + 1 == node["data_parallel_size_local"]
            ports.extend(range(low, high + 1))
    for host, ports in listening.items():
        assert len(ports) == len(set(ports)), host
    router_ports = [8000, 29000, 9090, 3000]
    assert not set(router_ports) & {p for ports in listening.values() for p in ports}


@settings(max_examples=100, deadline=None)
@given(cluster(), st.sampled_from(["prefill", "decode"]), st.integers(1, 2))
def test_appending_hosts_changes_no_existing_instance(generated, pool, multiple):
    spec, _, nodes = generated
    before = build_plan(spec)
    after = build_plan(_grow(spec, pool, nodes[0 if pool == "prefill" else 1] * multiple))
    old = {i["name"]: i for i in before["instances"]}
    new = {i["name"]: i for i in after["instances"]}
    assert set(old) < set(new)
    for name, inst in old.items():
        assert _placement(new[name]) == _placement(inst), name
        if pool == "decode" or inst["role"] == "prefill":
            # Same rank: the unit's files are identical.
            assert new[name]["nodes"] == inst["nodes"], name
        else:
            # Growing prefill shifts decode ranks, which NIXL never reads:
            # nothing written on a decode node changes.
            assert new[name]["kv_rank"] == inst["kv_rank"] + (
                len(new) - len(old))
            assert [n["serve_args"] for n in new[name]["nodes"]] == [n["serve_args"] for n in inst["nodes"]]
            assert [n["env"] for n in new[name]["nodes"]] == [n["env"] for n in inst["nodes"]]
    # What the unit and env templates read per host is identical on every
    # existing host: nothing there is rewritten, so nothing restarts.
    for host in {n["host"] for inst in old.values() for n in inst["nodes"]}:
        assert host_workers(after, host) == host_workers(before, host), host


@settings(max_examples=100, deadline=None)
@given(cluster(), st.sampled_from(["prefill", "decode"]))
def test_raising_the_instance_count_changes_no_existing_instance(generated, pool):
    spec, _, _ = generated
    capacity = sum(i["role"] == pool for i in build_plan(spec)["instances"])
    if capacity < 2:
        return
    smaller = copy.deepcopy(spec)
    smaller["pools"][pool]["instances"] = capacity - 1
    before = {i["name"]: i for i in build_plan(smaller)["instances"] if i["role"] == pool}
    after = {i["name"]: i for i in build_plan(spec)["instances"] if i["role"] == pool}
    assert len(after) == len(before) + 1
    for name, inst in before.items():
        assert _placement(after[name]) == _placement(inst)


@settings(max_examples=50, deadline=None)
@given(cluster())
def test_router_lists_exactly_the_leaders(generated):
    spec, _, _ = generated
    plan = build_plan(spec)
    args = plan["router"]["args"]
    if plan["router"]["mode"] == "discovery":  # each leader announces its ranks
        prefill = [a for i in plan["instances"] if i["role"] == "prefill" for a in i["announce"]["addresses"]]
        decode = [a for i in plan["instances"] if i["role"] == "decode" for a in i["announce"]["addresses"]]
    else:
        prefill = [args[i + 1] for i, a in enumerate(args) if a == "--prefill"]
        decode = [args[i + 1] for i, a in enumerate(args) if a == "--decode"]
    # One worker per data-parallel rank: url@rank (a bare URL for one rank).
    def ranks(role):
        return [f"{i['url']}@{r}" if i["parallelism"]["data_parallel_size"] > 1 else i["url"]
                for i in plan["instances"] if i["role"] == role
                for r in range(i["parallelism"]["data_parallel_size"])]
    assert prefill == ranks("prefill")
    assert decode == ranks("decode")
    assert len(set(prefill + decode)) == sum(i["parallelism"]["data_parallel_size"] for i in plan["instances"])
