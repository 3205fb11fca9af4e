"""The opt-in GB200 profile: the article's 4 x 2-GPU prefill shape with the
reproduction's exact flags (prefetch weight offload, eager, 65536 tokens)."""

from __future__ import annotations

import yaml
from conftest import ROOT, gb200_pools, make_spec
from pd_planner import build_plan
from pd_planner.schema import POOL_OPTIONS, normalize
from pd_planner.vllm_rules import pool_findings

PROFILE = ROOT / "inventories" / "profiles" / "gb200-prefill-2gpu-offload.yml"


def _profile_pool() -> dict:
    return yaml.safe_load(PROFILE.read_text())["pd_pool"]


def _flag(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_the_profile_plans_four_offloaded_two_gpu_prefill_instances():
    pools = gb200_pools()
    pools["prefill"] = _profile_pool()
    plan = build_plan(make_spec(2, 2, pools=pools))
    prefill = [i for i in plan["instances"] if i["role"] == "prefill"]
    assert [(i["name"], i["nodes"][0]["host"], i["nodes"][0]["gpus"]) for i in prefill] == [
        ("prefill-0", "prefill-tray-000", [0, 1]), ("prefill-1", "prefill-tray-000", [2, 3]),
        ("prefill-2", "prefill-tray-001", [0, 1]), ("prefill-3", "prefill-tray-001", [2, 3]),
    ]
    # 19 + 381/2 = 209.5 GB of NVFP4 weights per GPU, half of it in Grace memory.
    assert prefill[0]["capacity"]["weights_per_gpu_gb"] == 209.5
    assert prefill[0]["capacity"]["offloaded_per_gpu_gb"] == 104.8
    args = prefill[0]["nodes"][0]["serve_args"]
    assert _flag(args, "--offload-group-size") == "2"
    assert _flag(args, "--offload-num-in-group") == "1"
    assert _flag(args, "--offload-prefetch-step") == "1"
    assert _flag(args, "--max-num-batched-tokens") == "65536"
    assert _flag(args, "--all2all-backend") == "allgather_reducescatter"
    assert {"--enforce-eager", "--no-enable-prefix-caching", "--numa-bind"} <= set(args)
    assert "--enable-eplb" not in args


def test_the_profile_breaks_no_runtime_rule():
    pool = normalize(_profile_pool(), POOL_OPTIONS, "pd_pool (prefill)")
    for version in ("0.33.0", "0.34.0"):
        findings = pool_findings(version, "prefill", pool, model_max_len=163840, gpu_memory_gb=186)
        assert findings == []
