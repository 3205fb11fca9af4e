"""Data parallelism on the lab's CPU build: what the plan gives each node.

vLLM 0.32's CPU build reads VLLM_CPU_OMP_THREADS_BIND as one core list per
local worker rank, separated by '|' (utils/ompmultiprocessing.py), and gives
local DP rank r the lists [r*world, (r+1)*world). A comma list is one rank's
cores: the second rank of a DP2 node would find no list and stop.
"""

from __future__ import annotations

import copy

import pytest
from pd_planner import build_plan
from pd_planner.placement import cpu_threads_bind


def _by_name(plan: dict) -> dict:
    return {i["name"]: i for i in plan["instances"]}


def _dp2_decode_on_one_node(lab_spec: dict) -> dict:
    spec = copy.deepcopy(lab_spec)
    spec["hosts"]["lab-decode-0"].update(gpus=2, cpu_cores=[0, 1])
    spec["pools"]["decode"].update(gpus_per_instance=2, data_parallel_size=2)
    return spec


def test_a_one_core_node_binds_that_core(lab_spec):
    plan = build_plan(lab_spec)
    for inst in plan["instances"]:
        (node,) = inst["nodes"]
        assert node["env"]["VLLM_CPU_OMP_THREADS_BIND"] == str(node["gpus"][0])


def test_each_local_dp_rank_gets_its_own_core(lab_spec):
    decode = _by_name(build_plan(_dp2_decode_on_one_node(lab_spec)))["decode-0"]
    (node,) = decode["nodes"]
    assert node["gpus"] == [0, 1]
    assert node["env"]["VLLM_CPU_OMP_THREADS_BIND"] == "0|1"
    args = node["serve_args"]
    assert args[args.index("--data-parallel-size") + 1] == "2"
    assert args[args.index("--data-parallel-size-local") + 1] == "2"
    # Each DP rank's NIXL side channel listens on base + its rank.
    assert node["ports"]["nixl_side_channel"] == [5700, 5701]


def test_a_dp_instance_spans_two_one_core_nodes_with_a_headless_follower(lab_spec):
    spec = copy.deepcopy(lab_spec)
    spec["groups"]["prefill"] = ["lab-prefill-0", "lab-prefill-1"]
    spec["hosts"]["lab-prefill-1"] = {**spec["hosts"]["lab-prefill-0"], "address": "10.89.60.12", "cpu_cores": [1]}
    spec["pools"]["prefill"].update(gpus_per_instance=2, data_parallel_size=2)
    prefill = _by_name(build_plan(spec))["prefill-0"]
    leader, follower = prefill["nodes"]
    assert (leader["host"], follower["host"]) == ("lab-prefill-0", "lab-prefill-1")
    assert leader["env"]["VLLM_CPU_OMP_THREADS_BIND"] == "0"
    assert follower["env"]["VLLM_CPU_OMP_THREADS_BIND"] == "1"
    assert "--headless" in follower["serve_args"] and "--port" not in follower["serve_args"]
    assert follower["serve_args"][follower["serve_args"].index("--data-parallel-start-rank") + 1] == "1"
    assert follower["serve_args"][follower["serve_args"].index("--data-parallel-address") + 1] == "10.89.60.11"
    assert follower["ports"]["nixl_side_channel"] == [5601, 5601]


@pytest.mark.parametrize(("cores", "bind"), [([3], "3"), ([0, 1], "0|1"), ([4, 5, 6, 7], "4|5|6|7")])
def test_the_bind_is_one_core_per_rank(cores, bind):
    assert cpu_threads_bind(cores) == bind
