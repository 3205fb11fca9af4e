"""lib/pd_bench/inventory.py, the inventory bench/plan_bench.py and
bench/render_bench.py render: Ansible loads it and the planner plans it
(every serving tray in the IMEX domain's list, the spec's groups and
addresses), without the benchmarks' timing."""

from __future__ import annotations

from conftest import inventory_spec
from pd_bench.inventory import write_inventory
from pd_bench.specs import make_spec
from pd_planner import build_plan


def test_a_generated_inventory_plans_with_every_tray_in_its_imex_domain(tmp_path):
    spec = make_spec(2, 2)
    spec["hosts"]["mon-01"] = {"address": "10.20.0.6"}
    spec["groups"]["monitoring"] = ["mon-01"]
    assert write_inventory(spec, tmp_path) == 6
    plan = build_plan(inventory_spec(tmp_path))
    trays = [h for g in ("prefill", "decode") for h in spec["groups"][g]]
    assert sorted(plan["hosts"]) == sorted([*trays, "ctl-01", "mon-01"])
    assert {plan["hosts"][h]["address"] for h in trays} == {spec["hosts"][h]["address"] for h in trays}
    (domain,) = plan["imex_domains"]
    assert sorted(domain["hosts"]) == sorted(trays)
    assert sorted(domain["addresses"]) == sorted(spec["hosts"][h]["address"] for h in trays)
    assert "monitoring" in plan["hosts"]["mon-01"]["groups"] and "router" in plan["hosts"]["ctl-01"]["groups"]
