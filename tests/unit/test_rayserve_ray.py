"""The rendered Serve config against Ray 2.60.0's own code (`make ray-venv`):
ServeDeploySchema, the P/D arguments model (PDServingArgs, which validates
each LLMConfig), Ray's split of engine_kwargs into vLLM's engine and
frontend fields, and Serve's code-version hash across a scale.

Importing PDServingArgs imports vLLM (ray.llm's openai_api_models imports
vllm.entrypoints.* at module level), so .venv-ray sees .venv-vllm's vLLM
(CPU build 0.32.0, the release Ray mode plans) through a .pth file: Ray's
checks run against the vLLM release Ray mode pins."""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, inventory_spec
from pd_planner import build_plan

pytestmark = pytest.mark.vllm_parser

RAY_PYTHON = ROOT / ".venv-ray" / "bin" / "python"

CHECK = """
import json, sys
from ray.serve.schema import ServeDeploySchema
from ray.serve._private.deploy_utils import get_app_code_version
from ray.llm._internal.serve.serving_patterns.prefill_decode.builder import PDServingArgs
from ray.llm._internal.serve.engines.vllm.vllm_models import VLLMEngineConfig
import vllm
out = []
for config in json.load(sys.stdin):
    app = ServeDeploySchema.model_validate(config).applications[0]
    args = PDServingArgs.model_validate(app.args)
    engines = {p: VLLMEngineConfig.from_llm_config(getattr(args, p + "_config")) for p in ("prefill", "decode")}
    out.append({"code_version": get_app_code_version(app), "vllm": vllm.__version__,
                "engine": {p: sorted(e.engine_kwargs) for p, e in engines.items()},
                "frontend": {p: sorted(e.frontend_kwargs) for p, e in engines.items()}})
print("RESULT " + json.dumps(out))
"""


def _ray(configs: list[dict]) -> list[dict]:
    if not RAY_PYTHON.exists():
        if os.environ.get("PD_REQUIRE_VLLM_PARSER"):
            pytest.fail(f"{RAY_PYTHON} missing (make ray-venv)")
        pytest.skip("no Ray venv (make ray-venv)")
    env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run([str(RAY_PYTHON), "-c", CHECK], input=json.dumps(configs), capture_output=True,
                            text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


@pytest.fixture(scope="module")
def checked() -> dict:
    """The sample, the sample scaled in, and the lab in Ray mode, checked by Ray in one process."""
    spec = inventory_spec(ROOT / "inventories" / "gb200-rayserve")
    smaller = copy.deepcopy(spec)
    smaller["pools"]["prefill"]["instances"] = 1
    lab = {**inventory_spec(ROOT / "inventories" / "lab"), "serving": {"mode": "rayserve"}}
    plans = {"sample": build_plan(spec), "scaled": build_plan(smaller), "lab": build_plan(lab)}
    results = _ray([p["rayserve"]["serve_config"] for p in plans.values()])
    return {name: {"plan": plan, "ray": ray} for (name, plan), ray in zip(plans.items(), results, strict=True)}


def test_ray_accepts_the_rendered_serve_configs(checked):
    for name, entry in checked.items():
        args = entry["plan"]["rayserve"]["serve_config"]["applications"][0]["args"]
        for pool in ("prefill", "decode"):
            # Every engine kwarg is a field of the pinned vLLM's engine or
            # frontend args (Ray raises "Unknown engine argument" otherwise).
            assert sorted(entry["ray"]["engine"][pool] + entry["ray"]["frontend"][pool]) == \
                sorted(args[f"{pool}_config"]["engine_kwargs"]), name
        assert entry["ray"]["vllm"].split("+")[0] == entry["plan"]["vllm_version"], name


def test_a_scale_keeps_serves_code_version(checked):
    """Same code version: Serve applies the new replica counts in place
    instead of restarting every replica."""
    assert checked["sample"]["ray"]["code_version"] == checked["scaled"]["ray"]["code_version"]


def test_ray_fails_an_engine_kwarg_vllm_does_not_have():
    config = copy.deepcopy(build_plan(inventory_spec(ROOT / "inventories" / "gb200-rayserve"))["rayserve"]
                           ["serve_config"])
    config["applications"][0]["args"]["decode_config"]["engine_kwargs"]["cuda_graph_capture_size"] = 2048
    env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu"}
    env.pop("PYTHONPATH", None)
    if not RAY_PYTHON.exists():
        pytest.skip("no Ray venv (make ray-venv)")
    result = subprocess.run([str(RAY_PYTHON), "-c", CHECK], input=json.dumps([config]), capture_output=True,
                            text=True, env=env, timeout=900)
    assert result.returncode != 0 and "Unknown engine argument: cuda_graph_capture_size" in result.stderr


def test_the_vllm_module_ray_imports_is_in_0_32_and_gone_in_0_33():
    """The plan's refusal (rayserve.RAY_RELEASES) read from the wheels."""
    if not RAY_PYTHON.exists():
        pytest.skip("no Ray venv (make ray-venv)")
    ray_site = Path(subprocess.run([str(RAY_PYTHON), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   capture_output=True, text=True, check=True).stdout.strip())
    models = (ray_site / "ray/llm/_internal/serve/engines/vllm/vllm_models.py").read_text()
    assert "from vllm.entrypoints.launchers.cli_args import FrontendArgs" in models
    vllm_site = (ROOT / ".venv-ray").glob("lib/python*/site-packages/*.pth")
    cpu = next(Path(p.read_text().strip()) for p in vllm_site if "vllm" in p.name)
    assert (cpu / "vllm/entrypoints/launchers/cli_args.py").is_file()
    overlay = os.environ.get("PD_VLLM_OVERLAY_0_33_0") or str(ROOT / ".venv-vllm" / "overlay-0.33.0")
    assert Path(overlay, "vllm/entrypoints/launchers").is_dir()
    assert not Path(overlay, "vllm/entrypoints/launchers/cli_args.py").exists()
