"""Ray Serve mode (pd_serving.mode rayserve): what the plan yields from the
same pools, what it refuses, and what a scale rerun changes. Ray's own
schemas check the rendered config in test_rayserve_ray.py."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess

import pytest
import yaml
from conftest import BIN, ENV, ROOT, inventory_spec, make_spec
from pd_planner import PlanError, build_plan, monitoring
from pd_planner.rayserve import engine_kwargs
from specs import systemd_split

SAMPLE = ROOT / "inventories" / "gb200-rayserve"


@pytest.fixture(scope="module")
def ray_spec() -> dict:
    return inventory_spec(SAMPLE)


@pytest.fixture(scope="module")
def ray_plan(ray_spec) -> dict:
    return build_plan(ray_spec)


def _flag(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_units_mode_is_the_default_and_leaves_the_plan_alone():
    spec = make_spec(2, 2, vllm_version="0.32.0")
    plan = build_plan(spec)
    assert "rayserve" not in plan
    assert plan == build_plan({**spec, "serving": {"mode": "units"}})


def test_sample_plans_a_head_on_the_router_host_and_a_worker_per_tray(ray_plan):
    ray = ray_plan["rayserve"]
    assert ray["head"] == "cpu-ctl-01"
    assert [(n["host"], n["role"]) for n in ray["nodes"]] == [
        ("cpu-ctl-01", "head"), ("gb200-tray-01", "worker"), ("gb200-tray-02", "worker"),
        ("gb200-tray-03", "worker"), ("gb200-tray-04", "worker")]
    head, tray = ray["nodes"][0]["args"], ray["nodes"][1]["args"]
    assert head[:2] == ["start", "--head"] and head[-1] == "--block"
    assert _flag(head, "--node-ip-address") == "10.20.0.5" == _flag(head, "--dashboard-host")
    assert _flag(head, "--num-gpus") == "0"
    assert _flag(tray, "--address") == "10.20.0.5:6379" and tray[-1] == "--block"
    assert _flag(tray, "--node-ip-address") == "10.20.0.11"
    assert json.loads(_flag(tray, "--resources")) == {"pd_prefill": 4}
    assert json.loads(_flag(ray["nodes"][3]["args"], "--resources")) == {"pd_decode": 4}
    # Ray starts the engines: no vLLM unit anywhere; every node has a vLLM venv.
    assert all(h["units"] == [] for h in ray_plan["hosts"].values())
    assert all(ray_plan["hosts"][n["host"]]["vllm"]["venv"] == n["venv"] for n in ray["nodes"])
    assert ray["url"] == "http://10.20.0.5:8000"


def test_serve_config_comes_from_the_pools(ray_plan):
    config = ray_plan["rayserve"]["serve_config"]
    (app,) = config["applications"]
    assert app["import_path"] == "ray.serve.llm:build_pd_openai_app"
    assert config["http_options"] == {"host": "10.20.0.5", "port": 8000}
    prefill, decode = app["args"]["prefill_config"], app["args"]["decode_config"]
    assert prefill["model_loading_config"]["model_id"] == decode["model_loading_config"]["model_id"]
    assert prefill["engine_kwargs"]["data_parallel_size"] == 4
    assert decode["engine_kwargs"]["data_parallel_size"] == 8
    assert prefill["engine_kwargs"]["kv_transfer_config"]["kv_connector"] == "NixlConnector"
    assert decode["engine_kwargs"]["compilation_config"] == {"cudagraph_mode": "FULL_DECODE_ONLY"}
    # Per-node flags of the units never reach Ray (it places replicas itself).
    for kwargs in (prefill["engine_kwargs"], decode["engine_kwargs"]):
        assert not {"host", "port", "data_parallel_address", "data_parallel_rpc_port",
                    "data_parallel_size_local", "served_model_name"} & set(kwargs)
    assert prefill["placement_group_config"]["bundles"] == [{"GPU": 1, "pd_prefill": 1}]
    assert prefill["accelerator_type"] == "GB200"
    assert prefill["log_engine_metrics"] is True and decode["log_engine_metrics"] is True
    assert prefill["experimental_configs"]["NIXL_SIDE_CHANNEL_PORT_BASE"] == 5600
    # Replicas: 2 prefill gangs of DP4, 1 decode gang of DP8.
    assert {d["name"]: d["autoscaling_config"]["min_replicas"] for d in app["deployments"]} == {
        "Prefill:prefill": 8, "Decode:decode": 8}


def test_cpu_nodes_get_cpu_bundles_and_no_accelerator(lab_spec):
    plan = build_plan({**lab_spec, "serving": {"mode": "rayserve"}})
    prefill = plan["rayserve"]["serve_config"]["applications"][0]["args"]["prefill_config"]
    assert prefill["placement_group_config"]["bundles"] == [{"CPU": 1, "pd_prefill": 1}]
    assert "accelerator_type" not in prefill
    assert prefill["engine_kwargs"]["kv_transfer_config"]["kv_buffer_device"] == "cpu"
    head = plan["rayserve"]["nodes"][0]
    assert plan["hosts"][head["host"]]["vllm"]["flavor"] == "cpu"


@pytest.mark.parametrize("version", ["0.33.0", "0.34.0"])
def test_a_vllm_ray_cannot_import_is_refused_naming_both_versions(ray_spec, version):
    with pytest.raises(PlanError, match=rf"Ray 2\.60\.0 cannot import vLLM {version}.*"
                                        r"vllm\.entrypoints\.launchers\.cli_args.*0\.33\.0 removed"):
        build_plan({**ray_spec, "vllm_version": version})


def test_unknown_mode_and_ray_release_are_refused(ray_spec):
    with pytest.raises(PlanError, match=r"pd_serving\.mode is 'ray'; valid: units, rayserve"):
        build_plan({**ray_spec, "serving": {"mode": "ray"}})
    with pytest.raises(PlanError, match=r"pd_serving\.ray_version is '2\.51\.0'; the planner knows Ray 2\.60\.0"):
        build_plan({**ray_spec, "serving": {"mode": "rayserve", "ray_version": "2.51.0"}})
    with pytest.raises(PlanError, match="pd_serving has unknown option"):
        build_plan({**ray_spec, "serving": {"mode": "rayserve", "gcs": 1}})


def test_ray_ports_are_claimed_like_every_other_port(ray_plan, ray_spec):
    head_ports = {p["port"]: p for p in ray_plan["hosts"]["cpu-ctl-01"]["ports"]}
    assert {6379, 8265, 8000, 10001, 6380, 6385, 9090, 3000} <= set(head_ports)
    assert head_ports[8000]["unit"] == "ray-head"
    tray = {p["port"]: p for p in ray_plan["hosts"]["gb200-tray-01"]["ports"]}
    # NIXL side channels of any prefill replica Ray may place there.
    assert {5600, 5607} <= set(tray) and 5608 not in tray
    # The units' listeners are gone (no worker HTTP, no router API).
    assert 8100 not in tray and 29000 not in head_ports
    # Serve's proxy on Prometheus' port: the one collision message.
    spec = copy.deepcopy(ray_spec)
    spec["serving"] = {**spec["serving"], "serve_port": 9090}
    with pytest.raises(PlanError, match="port collision on host cpu-ctl-01: port 9090"):
        build_plan(spec)


def test_scaling_changes_only_the_replica_overrides(ray_spec):
    """Serve hashes import_path, runtime_env and args into the app's code
    version; only `deployments` may change for an in-place scale."""
    smaller = copy.deepcopy(ray_spec)
    smaller["pools"]["prefill"]["instances"] = 1
    before = build_plan(ray_spec)["rayserve"]["serve_config"]
    after = build_plan(smaller)["rayserve"]["serve_config"]
    (app_before,), (app_after,) = before["applications"], after["applications"]
    assert {k: v for k, v in app_before.items() if k != "deployments"} == \
        {k: v for k, v in app_after.items() if k != "deployments"}
    assert app_after["deployments"][0]["autoscaling_config"] == {
        "min_replicas": 4, "initial_replicas": 4, "max_replicas": 4}
    assert app_after["deployments"][1] == app_before["deployments"][1]


def test_scale_rerun_render_diff_is_only_the_replica_counts(ray_spec, tmp_path):
    """The files a scale writes on the head differ in the replica lines only."""
    smaller = copy.deepcopy(ray_spec)
    smaller["pools"]["prefill"]["instances"] = 1
    paths = []
    for name, spec in (("before", ray_spec), ("after", smaller)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(build_plan(spec)["rayserve"]["serve_config"], sort_keys=False))
        paths.append(str(path))
    diff = subprocess.run(["diff", "-U0", *paths], capture_output=True, text=True).stdout
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert sorted(changed) == sorted(["-      min_replicas: 8", "-      initial_replicas: 8",
                                      "-      max_replicas: 8", "+      min_replicas: 4",
                                      "+      initial_replicas: 4", "+      max_replicas: 4"])


def test_autoscale_lets_serve_grow_to_what_the_pool_holds(ray_spec):
    spec = copy.deepcopy(ray_spec)
    spec["pools"]["prefill"]["instances"] = 1
    spec["serving"] = {**spec["serving"], "autoscale": True}
    deployments = build_plan(spec)["rayserve"]["serve_config"]["applications"][0]["deployments"]
    assert deployments[0]["autoscaling_config"] == {"min_replicas": 4, "initial_replicas": 4, "max_replicas": 8}


def test_prometheus_scrapes_ray_with_the_pool_labels(ray_plan, tmp_path, promtool):
    jobs = {j["job_name"]: j for j in ray_plan["scrape"]["jobs"]}
    assert set(jobs) == {"vllm-prefill", "vllm-decode", "ray-head", "dcgm", "prometheus"}
    prefill = jobs["vllm-prefill"]["targets"]
    assert [t["target"] for t in prefill] == ["10.20.0.11:6385", "10.20.0.12:6385"]
    assert {t["labels"]["pool"] for t in prefill} == {"prefill"}
    config = monitoring.prometheus_config(ray_plan, str(tmp_path / "file_sd"), str(tmp_path / "rules"))
    (relabel,) = next(c for c in config["scrape_configs"] if c["job_name"] == "vllm-decode")["metric_relabel_configs"]
    assert relabel["regex"] == "ray_vllm_(.+)" and relabel["replacement"] == "vllm:$1"
    (tmp_path / "rules").mkdir()
    (tmp_path / "file_sd").mkdir()
    for job, targets in monitoring.file_sd(ray_plan).items():
        (tmp_path / "file_sd" / f"{job}.json").write_text(json.dumps(targets))
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_engine_kwargs_from_vllm_flags():
    assert engine_kwargs(["--host", "10.0.0.1", "--max-model-len", "2048", "--enforce-eager",
                          "--no-enable-prefix-caching", "--kv-cache-dtype", "fp8",
                          "--kv-transfer-config", '{"kv_connector":"NixlConnector"}']) == {
        "max_model_len": 2048, "enforce_eager": True, "enable_prefix_caching": False, "kv_cache_dtype": "fp8",
        "kv_transfer_config": {"kv_connector": "NixlConnector"}}
    with pytest.raises(PlanError, match="cannot map vLLM argument '-O3'"):
        engine_kwargs(["-O3"])


def test_make_render_writes_the_ray_units_and_the_serve_config(ray_plan, tmp_path):
    """render.yml (what `make render INVENTORY=inventories/gb200-rayserve`
    runs): the head's unit and Serve config, a tray's worker unit, and no
    vllm-router or vLLM worker unit."""
    result = subprocess.run(
        [str(BIN / "ansible-playbook"), str(ROOT / "playbooks" / "render.yml"), "-i", str(SAMPLE),
         "-e", f"render_dir={tmp_path}", "-e", "render_hosts=cpu-ctl-01,gb200-tray-01"],
        capture_output=True, text=True, env=ENV, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    head, tray = tmp_path / "cpu-ctl-01", tmp_path / "gb200-tray-01"
    served = yaml.safe_load((head / "etc/ray-serve/pd-serve.yaml").read_text())
    assert served == ray_plan["rayserve"]["serve_config"]
    for root, node in ((head, ray_plan["rayserve"]["nodes"][0]), (tray, ray_plan["rayserve"]["nodes"][1])):
        unit = (root / f"etc/systemd/system/{node['unit']}.service").read_text()
        exec_start = unit.split("ExecStart=", 1)[1].split("\nRestart=", 1)[0]
        assert systemd_split(exec_start) == [f"{node['venv']}/bin/ray", *node["args"]]
        assert f"EnvironmentFile=/etc/ray-serve/{node['unit']}.env" in unit
    units = {p.name for p in tmp_path.glob("*/etc/systemd/system/*.service")}
    assert not any(u.startswith(("vllm-router", "vllm-prefill", "vllm-decode")) for u in units), units


@pytest.mark.parametrize(("key", "value"), [("serve_port", 0), ("gcs_port", 65536), ("metrics_export_port", -1),
                                            ("dashboard_port", "8265")])
def test_ray_ports_are_ports(ray_spec, key, value):
    """pd_serving's ports have the schema's PORT type (1-65535), like every other port."""
    with pytest.raises(PlanError, match=rf"pd_serving\.{key}"):
        build_plan({**ray_spec, "serving": {"mode": "rayserve", key: value}})


def test_worker_port_range_must_not_be_reversed(ray_spec):
    with pytest.raises(PlanError, match=r"pd_serving\.min_worker_port \(20000\) is above pd_serving\.max_worker_port"):
        build_plan({**ray_spec, "serving": {"mode": "rayserve", "min_worker_port": 20000, "max_worker_port": 10127}})


def _render(inventory, out, hosts: str) -> None:
    result = subprocess.run(
        [str(BIN / "ansible-playbook"), str(ROOT / "playbooks" / "render.yml"), "-i", str(inventory),
         "-e", f"render_dir={out}", "-e", f"render_hosts={hosts}"],
        capture_output=True, text=True, env=ENV, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr


def test_scale_out_render_changes_only_the_replica_counts_and_adds_a_worker(tmp_path):
    """A tray added to the prefill pool (a third DP4 instance), rendered the
    way a rerun writes it: the head's Serve config differs in the replica
    lines only (what `serve deploy` then applies in place, see
    test_rayserve_ray.py), the head's Ray unit and environment are
    byte-identical (the role restarts a Ray node only when those change),
    and the new tray gets its ray-worker unit."""
    scaled = tmp_path / "inventory"
    shutil.copytree(SAMPLE, scaled)
    hosts = yaml.safe_load((scaled / "hosts.yml").read_text())
    hosts["all"]["children"]["prefill"]["hosts"]["gb200-tray-05"] = {"pd_address": "10.20.0.15"}
    (scaled / "hosts.yml").write_text(yaml.safe_dump(hosts, sort_keys=False))
    _render(SAMPLE, tmp_path / "before", "cpu-ctl-01")
    _render(scaled, tmp_path / "after", "cpu-ctl-01,gb200-tray-05")
    head_before, head_after = tmp_path / "before" / "cpu-ctl-01", tmp_path / "after" / "cpu-ctl-01"
    diff = subprocess.run(["diff", "-U0", str(head_before / "etc/ray-serve/pd-serve.yaml"),
                           str(head_after / "etc/ray-serve/pd-serve.yaml")], capture_output=True, text=True).stdout
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert sorted(changed) == sorted(["-      min_replicas: 8", "-      initial_replicas: 8",
                                      "-      max_replicas: 8", "+      min_replicas: 12",
                                      "+      initial_replicas: 12", "+      max_replicas: 12"]), diff
    for name in ("etc/systemd/system/ray-head.service", "etc/ray-serve/ray-head.env"):
        assert (head_before / name).read_bytes() == (head_after / name).read_bytes(), name
    unit = (tmp_path / "after" / "gb200-tray-05" / "etc/systemd/system/ray-worker.service").read_text()
    assert "--address 10.20.0.5:6379" in unit and "--node-ip-address 10.20.0.15" in unit
