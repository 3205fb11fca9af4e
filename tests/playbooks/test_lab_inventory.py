"""The lab's scaled inventory: inventories/lab plus generated hosts plan as expected."""

from __future__ import annotations

import json
import subprocess

from conftest import BIN, ENV, ROOT
from pd_planner import build_plan
from pd_planner.inventory import spec_from_inventory
from pdlab import inventory as pdlab_inventory


def _labctl(tmp_path):
    """lab/pdlab's inventory module, writing its scale.yml under tmp_path."""
    module = pdlab_inventory
    module.STATE = tmp_path
    return module


def _plan(args: list[str]) -> dict:
    out = subprocess.run([str(BIN / "ansible-inventory"), *args, "--list"], capture_output=True, text=True,
                         env=ENV, cwd=ROOT, check=True).stdout
    data = json.loads(out)
    hostvars = data["_meta"]["hostvars"]
    groups = {name: body.get("hosts", []) for name, body in data.items() if name != "_meta"}
    return build_plan(spec_from_inventory(groups, lambda h, v: hostvars.get(h, {}).get(v)))


def test_default_shape_is_the_committed_inventory(tmp_path):
    labctl = _labctl(tmp_path)
    assert labctl.inventory_args(1, 1) == ["-i", str(ROOT / "inventories" / "lab")]


def test_scaled_shape_appends_hosts_that_inherit_the_lab_group_vars(tmp_path):
    labctl = _labctl(tmp_path)
    args = labctl.inventory_args(2, 2)
    assert args[-1] == str(tmp_path / "inventory" / "scale.yml")
    plan = _plan(args)
    names = [(i["name"], i["nodes"][0]["host"], i["nodes"][0]["address"]) for i in plan["instances"]]
    assert names == [("prefill-0", "lab-prefill-0", "10.89.60.11"), ("prefill-1", "lab-prefill-1", "10.89.60.12"),
                     ("decode-0", "lab-decode-0", "10.89.60.21"), ("decode-1", "lab-decode-1", "10.89.60.22")]
    # The original instances are unchanged by the scale-out (same files on their nodes).
    base = {i["name"]: i for i in _plan(labctl.inventory_args(1, 1))["instances"]}
    grown = {i["name"]: i for i in plan["instances"]}
    for name in ("prefill-0", "decode-0"):
        assert grown[name]["nodes"][0]["serve_args"] == base[name]["nodes"][0]["serve_args"]
        assert grown[name]["nodes"][0]["env"] == base[name]["nodes"][0]["env"]


def test_shrinking_back_removes_the_generated_hosts(tmp_path):
    labctl = _labctl(tmp_path)
    labctl.inventory_args(3, 1)
    labctl.inventory_args(1, 1)
    assert not (tmp_path / "inventory" / "scale.yml").exists()


def test_scale_in_puts_leaving_nodes_in_retired_for_one_run(tmp_path):
    labctl = _labctl(tmp_path)
    args = labctl.inventory_args(1, 1, retiring=["lab-prefill-1"])
    out = subprocess.run([str(BIN / "ansible-inventory"), *args, "--list"], capture_output=True, text=True,
                         env=ENV, cwd=ROOT, check=True).stdout
    data = json.loads(out)
    assert data["retired"]["hosts"] == ["lab-prefill-1"]
    assert data["_meta"]["hostvars"]["lab-prefill-1"]["pd_address"] == "10.89.60.12"
    # The plan no longer has the retired host's instance.
    plan = _plan(args)
    assert [i["name"] for i in plan["instances"]] == ["prefill-0", "decode-0"]
    assert "lab-prefill-1" not in plan["hosts"]


def test_a_host_both_serving_and_retired_is_a_plan_error():
    import pytest
    from pd_planner import PlanError

    groups = {"prefill": ["a"], "decode": ["b"], "router": ["c"], "monitoring": ["c"], "retired": ["a"]}
    with pytest.raises(PlanError, match="host a is in groups prefill and retired"):
        spec_from_inventory(groups, lambda h, v: None)


def test_a_host_moved_to_retired_gets_the_plan_in_later_stages(tmp_path):
    # retire.yml runs on prefill:decode:retired after the plan stage set the
    # plan on the serving hosts only; the retired host needs it too.
    args = _labctl(tmp_path).inventory_args(1, 1, retiring=["lab-prefill-1"])
    result = subprocess.run([str(BIN / "ansible-playbook"), *args,
                             str(ROOT / "tests" / "playbooks" / "files" / "plan_reaches_every_play_host.yml")],
                            capture_output=True, text=True, env=ENV, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stdout[-3000:]
    for host in ("lab-prefill-0", "lab-decode-0", "lab-prefill-1"):
        assert f"plan on {host}: True" in result.stdout, result.stdout[-3000:]


def test_the_wide_shape_plans_a_two_node_dp_prefill_beside_a_one_engine_decode(tmp_path):
    # make lab SHAPE=wide: -i inventories/lab -i inventories/lab-wide, no scale.yml.
    labctl = _labctl(tmp_path)
    (tmp_path / "inventory").mkdir()
    (tmp_path / "inventory" / "scale.yml").write_text("{}\n")
    args = labctl.inventory_args(1, 1, shape="wide")
    assert args == ["-i", str(ROOT / "inventories" / "lab"), "-i", str(ROOT / "inventories" / "lab-wide")]
    assert not (tmp_path / "inventory" / "scale.yml").exists()
    plan = _plan(args)
    by_name = {i["name"]: i for i in plan["instances"]}
    assert list(by_name) == ["prefill-0", "decode-0"]
    prefill, decode = by_name["prefill-0"], by_name["decode-0"]
    assert prefill["parallelism"]["data_parallel_size"] == 2 and prefill["parallelism"]["nodes"] == 2
    assert [(n["host"], n["leader"], n["gpus"]) for n in prefill["nodes"]] == [
        ("lab-prefill-0", True, [0]), ("lab-prefill-1", False, [0])]
    assert "--headless" in prefill["nodes"][1]["serve_args"]
    # Both prefill ranks on core 0; decode's one engine keeps core 1 to itself
    # (docs/serving.md, "The wide lab": a follower beside decode starved).
    assert [n["env"]["VLLM_CPU_OMP_THREADS_BIND"] for n in prefill["nodes"]] == ["0", "0"]
    assert decode["parallelism"]["data_parallel_size"] == 1 and decode["parallelism"]["nodes"] == 1
    assert decode["nodes"][0]["env"]["VLLM_CPU_OMP_THREADS_BIND"] == "1"
    # The router's workers are the leaders' URLs, as in the default lab.
    assert (prefill["url"], decode["url"]) == ("http://10.89.60.11:8100", "http://10.89.60.21:8200")
    # Both nodes' ranks meet over gloo on the podman network's interface; no
    # NCCL warning for the CPU build.
    assert all(n["env"]["GLOO_SOCKET_IFNAME"] == "eth0" for n in prefill["nodes"])
    assert not [w for w in plan["warnings"] if "spans 2 hosts" in w], plan["warnings"]


def test_the_default_shape_is_unchanged_by_the_wide_overlay(tmp_path):
    plan = _plan(_labctl(tmp_path).inventory_args(1, 1))
    for inst in plan["instances"]:
        assert inst["parallelism"]["data_parallel_size"] == 1 and len(inst["nodes"]) == 1
        assert "--data-parallel-size" not in inst["nodes"][0]["serve_args"]
