"""What an IMEX restart interrupts and in which order (lib/pd_planner/imex_restart.py),
on the gb200 sample's plan: 2 one-tray prefill instances, 1 decode instance
over trays 03 (leader) and 04 (headless follower)."""

from __future__ import annotations

import copy
import json

import pytest
from conftest import ROOT
from pd_planner import PlanError, imex_restart

PLAN = json.loads((ROOT / "tests" / "golden" / "gb200-plan.json").read_text())
TRAYS = ["gb200-tray-01", "gb200-tray-02", "gb200-tray-03", "gb200-tray-04"]
ALL_RUNNING = {"gb200-tray-01": ["vllm-prefill-0"], "gb200-tray-02": ["vllm-prefill-1"],
               "gb200-tray-03": ["vllm-decode-0"], "gb200-tray-04": ["vllm-decode-0"]}


def test_the_rack_list_changing_everywhere_gives_one_step_per_tray_and_one_for_the_two_tray_instance():
    steps = imex_restart.imex_restart_steps(PLAN, TRAYS, ALL_RUNNING)
    assert [s["trays"] for s in steps] == [["gb200-tray-01"], ["gb200-tray-02"], ["gb200-tray-03", "gb200-tray-04"]]
    assert [[i["instance"] for i in s["instances"]] for s in steps] == [["prefill-0"], ["prefill-1"], ["decode-0"]]
    # Never two steps' trays at once: every tray is in exactly one step.
    assert sorted(t for s in steps for t in s["trays"]) == TRAYS


def test_a_two_tray_instance_stops_leader_first_and_starts_follower_first_once_for_both_trays():
    (step,) = imex_restart.imex_restart_steps(PLAN, ["gb200-tray-03", "gb200-tray-04"], ALL_RUNNING)
    assert step["stops"] == [{"host": "gb200-tray-03", "unit": "vllm-decode-0", "instance": "decode-0"},
                             {"host": "gb200-tray-04", "unit": "vllm-decode-0", "instance": "decode-0"}]
    assert step["start"]["starts"] == [{"host": "gb200-tray-04", "unit": "vllm-decode-0", "instance": "decode-0"},
                                       {"host": "gb200-tray-03", "unit": "vllm-decode-0", "instance": "decode-0"}]
    (member,) = step["start"]["instances"]
    assert member["leader_host"] == "gb200-tray-03" and member["url"] == "http://10.20.0.13:8200"


def test_only_the_follower_tray_changing_still_stops_and_starts_the_whole_instance():
    (step,) = imex_restart.imex_restart_steps(PLAN, ["gb200-tray-04"], ALL_RUNNING)
    assert step["trays"] == ["gb200-tray-04"]  # IMEX restarts only where the list changed
    assert step["hosts"] == ["gb200-tray-03", "gb200-tray-04"]
    assert [s["host"] for s in step["stops"]] == ["gb200-tray-03", "gb200-tray-04"]


def test_router_workers_are_every_rank_pinned_url_of_the_instance_and_nothing_else():
    steps = imex_restart.imex_restart_steps(PLAN, TRAYS, ALL_RUNNING)
    assert steps[0]["instances"][0]["router_workers"] == [f"http://10.20.0.11:8100@{r}" for r in range(4)]
    assert steps[2]["instances"][0]["router_workers"] == [f"http://10.20.0.13:8200@{r}" for r in range(8)]


def test_a_bare_url_worker_is_matched_and_a_longer_port_is_not():
    plan = {"router": {"workers": {"prefill": ["http://h:8100", "http://h:81000@0", "http://h:8100@x"],
                                   "decode": ["http://h:8100@3"]}}}
    assert imex_restart.instance_router_workers(plan, "http://h:8100") == ["http://h:8100", "http://h:8100@3"]


def test_instances_not_running_are_left_stopped_and_named():
    running = {**ALL_RUNNING, "gb200-tray-02": []}
    steps = imex_restart.imex_restart_steps(PLAN, ["gb200-tray-02"], running)
    assert steps == [{"trays": ["gb200-tray-02"], "instances": [], "stops": [], "idle": ["prefill-1"],
                      "start": None, "hosts": ["gb200-tray-02"]}]


def test_a_multi_tray_instance_running_on_one_node_only_is_still_handled_whole():
    running = {"gb200-tray-04": ["vllm-decode-0"]}
    (step,) = imex_restart.imex_restart_steps(PLAN, ["gb200-tray-03"], running)
    assert [i["instance"] for i in step["instances"]] == ["decode-0"]
    assert [s["host"] for s in step["start"]["starts"]] == ["gb200-tray-04", "gb200-tray-03"]


def test_two_instances_on_one_tray_are_one_step_and_a_spanning_instance_joins_trays():
    plan = copy.deepcopy(PLAN)
    # decode-0 now also has a node on tray-01: trays 01, 03, 04 are one step.
    plan["instances"][2]["nodes"].append({**plan["instances"][2]["nodes"][1], "host": "gb200-tray-01",
                                          "leader": False})
    steps = imex_restart.imex_restart_steps(plan, TRAYS, {**ALL_RUNNING, "gb200-tray-01": ["vllm-prefill-0"]})
    assert [s["trays"] for s in steps] == [["gb200-tray-01", "gb200-tray-03", "gb200-tray-04"], ["gb200-tray-02"]]
    assert [i["instance"] for i in steps[0]["instances"]] == ["prefill-0", "decode-0"]


def test_an_unknown_host_is_refused_by_name():
    with pytest.raises(PlanError, match="IMEX restart: hosts not in the plan: tray-99"):
        imex_restart.imex_restart_steps(PLAN, ["tray-99"], {})


def test_running_units_may_come_as_host_unit_pairs():
    pairs = [["gb200-tray-04", "vllm-decode-0"]]
    assert (imex_restart.imex_restart_steps(PLAN, ["gb200-tray-03"], pairs)
            == imex_restart.imex_restart_steps(PLAN, ["gb200-tray-03"], {"gb200-tray-04": ["vllm-decode-0"]}))
