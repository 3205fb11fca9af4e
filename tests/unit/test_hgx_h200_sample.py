"""The HGX H200 sample (8-GPU boards, FP8 checkpoint) plans cleanly and its
pools break none of the vLLM runtime rules of either supported release."""

from __future__ import annotations

import json
import os

import pytest
from conftest import ROOT, inventory_spec
from pd_planner import build_plan
from pd_planner.catalog import GPU_PROFILES
from pd_planner.schema import POOL_OPTIONS, normalize
from pd_planner.vllm_rules import pool_findings


@pytest.fixture(scope="module")
def hgx_spec() -> dict:
    return inventory_spec(ROOT / "inventories" / "hgx-h200")


def test_the_sample_plans_without_warnings(hgx_spec):
    plan = build_plan(hgx_spec)
    assert plan["warnings"] == []
    shapes = [(i["name"], i["parallelism"]["tensor_parallel_size"], i["parallelism"]["data_parallel_size"],
               [n["host"] for n in i["nodes"]]) for i in plan["instances"]]
    assert shapes == [("prefill-0", 8, 1, ["hgx-h200-01"]), ("decode-0", 1, 8, ["hgx-h200-02"]),
                      ("decode-1", 1, 8, ["hgx-h200-03"])]
    assert plan["model"]["capacity_profile"] == "deepseek_r1_fp8"
    assert plan["imex_domains"] == []
    # FP8 weights fit with room for KV cache on both pools.
    assert all(i["capacity"]["kv_cache_per_gpu_gb"] > 15 for i in plan["instances"])


@pytest.mark.parametrize("version", ["0.33.0", "0.34.0"])
def test_the_pools_pass_the_runtime_rules(hgx_spec, version):
    for name, pool in hgx_spec["pools"].items():
        normalized = normalize(pool, POOL_OPTIONS, f"pd_pool ({name})")
        assert pool_findings(version, name, normalized, model_max_len=163840,
                             gpu_memory_gb=GPU_PROFILES["hgx_h200"]["gpu_memory_gb"]) == []


def test_hgx_plan_matches_golden(hgx_spec):
    """Any change to this sample's plan is deliberate: UPDATE_GOLDEN=1 rewrites it."""
    plan = build_plan(hgx_spec)
    golden = ROOT / "tests" / "golden" / "hgx-h200-plan.json"
    text = json.dumps(plan, indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()
