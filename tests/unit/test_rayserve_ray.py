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


# Serve's own decision for a redeploy: each deployment's DeploymentVersion
# (ray/serve/_private/version.py) before and after, built the way the
# controller builds it: LLMServer's deployment options (ray_actor_options,
# placement-group bundles) from each LLMConfig, the config's `deployments:`
# overrides applied by override_deployment_info, the application's code
# version. requires_actor_restart() is what makes the controller replace
# running replicas; equal versions only change the target replica count.
VERSIONS = """
import json, sys, types
import ray
from ray.serve.schema import ServeDeploySchema
from ray.serve._private.config import DeploymentConfig, ReplicaConfig
from ray.serve._private.deployment_info import DeploymentInfo
from ray.serve._private.application_state import override_deployment_info
from ray.serve._private.deploy_utils import get_app_code_version
from ray.serve._private.version import DeploymentVersion
from ray.llm._internal.serve.serving_patterns.prefill_decode.builder import PDServingArgs
from ray.llm._internal.serve.core.server.llm_server import LLMServer
# get_deployment_options merges the driver's runtime env; there is no cluster here.
ray.get_runtime_context = lambda: types.SimpleNamespace(runtime_env={})

def versions(config):
    app = ServeDeploySchema.model_validate(config).applications[0]
    args = PDServingArgs.model_validate(app.args)
    infos = {}
    for name, pool in (("Prefill:prefill", "prefill"), ("Decode:decode", "decode")):
        options = LLMServer.get_deployment_options(getattr(args, pool + "_config"))
        replica = ReplicaConfig.create(LLMServer, ray_actor_options=options["ray_actor_options"],
                                       placement_group_bundles=options["placement_group_bundles"],
                                       placement_group_strategy=options["placement_group_strategy"])
        infos[name] = DeploymentInfo(deployment_config=DeploymentConfig(), replica_config=replica,
                                     start_time_ms=0, deployer_job_id="")
    code = get_app_code_version(app)
    return {name: DeploymentVersion(code, info.deployment_config, info.replica_config.ray_actor_options,
                                    placement_group_bundles=info.replica_config.placement_group_bundles,
                                    placement_group_strategy=info.replica_config.placement_group_strategy)
            for name, info in override_deployment_info(infos, app).items()}

out = []
for before, after in json.load(sys.stdin):
    old, new = versions(before), versions(after)
    out.append({name: {"restart": old[name].requires_actor_restart(new[name]),
                       "reconfigure": old[name].requires_actor_reconfigure(new[name]),
                       "max_replicas": new[name].deployment_config.autoscaling_config.max_replicas}
                for name in old})
print("RESULT " + json.dumps(out))
"""


def test_serve_applies_a_scale_without_restarting_replicas():
    """Serve's own version logic on the configs a scale renders: scale-in
    and scale-out (a prefill tray added) change the replica targets and
    restart nothing, not even reconfigure() on running replicas; an engine
    change (max_model_len) restarts both pools' replicas (the check can fail)."""
    if not RAY_PYTHON.exists():
        if os.environ.get("PD_REQUIRE_VLLM_PARSER"):
            pytest.fail(f"{RAY_PYTHON} missing (make ray-venv)")
        pytest.skip("no Ray venv (make ray-venv)")
    spec = inventory_spec(ROOT / "inventories" / "gb200-rayserve")
    smaller, larger, engine = copy.deepcopy(spec), copy.deepcopy(spec), copy.deepcopy(spec)
    smaller["pools"]["prefill"]["instances"] = 1
    larger["hosts"]["gb200-tray-05"] = {**spec["hosts"]["gb200-tray-02"], "address": "10.20.0.15"}
    larger["groups"]["prefill"] = [*spec["groups"]["prefill"], "gb200-tray-05"]
    engine["pools"]["prefill"]["max_model_len"] = 32768
    engine["pools"]["decode"]["max_model_len"] = 32768
    configs = {name: build_plan(s)["rayserve"]["serve_config"]
               for name, s in (("sample", spec), ("smaller", smaller), ("larger", larger), ("engine", engine))}
    pairs = [(configs["sample"], configs[name]) for name in ("smaller", "larger", "engine")]
    env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run([str(RAY_PYTHON), "-c", VERSIONS], input=json.dumps(pairs), capture_output=True,
                            text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    smaller_v, larger_v, engine_v = json.loads(
        next(x for x in result.stdout.splitlines() if x.startswith("RESULT ")).removeprefix("RESULT "))
    no_restart = {"restart": False, "reconfigure": False}
    assert smaller_v == {"Prefill:prefill": {**no_restart, "max_replicas": 4},
                         "Decode:decode": {**no_restart, "max_replicas": 8}}
    assert larger_v == {"Prefill:prefill": {**no_restart, "max_replicas": 12},
                        "Decode:decode": {**no_restart, "max_replicas": 8}}
    assert engine_v["Prefill:prefill"]["restart"] and engine_v["Decode:decode"]["restart"]


# Serve's class-based ingress (OpenAiIngress) injects `self` through a FastAPI
# dependency (ray/serve/_private/http_util.py make_fastapi_class_based_view).
# With the FastAPI that `pip install ray[serve]==2.60.0` resolves today
# (0.165.0; Ray asks fastapi>=0.133.0) the injection is lost: `self` becomes a
# required query parameter and every ingress route answers 400 "Invalid
# request format: Field required at ('query', 'self')" (the local 1P1D run,
# docs/rayserve.md). vLLM 0.32.0's FastAPI (0.136.3) keeps it.
INGRESS = """
import fastapi
from fastapi import FastAPI
from ray.serve._private.http_util import _walk_fastapi_routes, make_fastapi_class_based_view
app = FastAPI()
class Ingress:
    @app.get("/v1/models")
    async def models(self):
        return {}
make_fastapi_class_based_view(app, Ingress)
(route,) = [r for r, _, _ in _walk_fastapi_routes(app) if getattr(r, "path", "") == "/v1/models"]
print("RESULT", fastapi.__version__, [p.name for p in route.dependant.query_params])
"""


def test_serves_ingress_injects_self_with_the_installed_fastapi():
    if not RAY_PYTHON.exists():
        if os.environ.get("PD_REQUIRE_VLLM_PARSER"):
            pytest.fail(f"{RAY_PYTHON} missing (make ray-venv)")
        pytest.skip("no Ray venv (make ray-venv)")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run([str(RAY_PYTHON), "-c", INGRESS], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT "))
    assert line.endswith("[]"), f"Serve's ingress would ask for `self` as a query parameter: {line}"
