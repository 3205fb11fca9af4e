"""Per-host facts the roles read from the plan instead of re-deriving them:
the vLLM flavor, venv and launcher, IMEX membership, each unit's full argv
and writable paths, and the router's worker set."""

from __future__ import annotations

import pytest
from conftest import make_spec
from pd_planner import PlanError, build_plan


def _small(gpus: int) -> dict:
    return {"gpus_per_instance": gpus, "tensor_parallel_size": gpus}


def test_gpu_hosts_run_the_cuda_launcher_from_the_versioned_venv(gb200_spec):
    plan = build_plan(gb200_spec)
    assert plan["vllm"] == {"version": "0.34.0", "install_root": "/opt/vllm"}
    for host in plan["hosts"].values():
        if not set(host["groups"]) & {"prefill", "decode"}:
            assert host["vllm"] is None
            continue
        assert host["vllm"] == {
            "flavor": "cuda",
            "version": "0.34.0",
            "venv": "/opt/vllm/0.34.0",
            "launcher": ["/opt/vllm/0.34.0/bin/vllm", "serve"],
            "check_args": "/opt/vllm/0.34.0/bin/vllm-check-args",
        }


def test_lab_hosts_run_the_serve_subcommand_through_the_roles_cpu_launcher(lab_spec):
    plan = build_plan(lab_spec)
    node = plan["instances"][0]["nodes"][0]
    facts = plan["hosts"][node["host"]]["vllm"]
    venv = f"/opt/vllm/{lab_spec['vllm_version']}"
    assert facts["flavor"] == "cpu"
    # The vllm role installs vllm_serve.py there (roles/vllm/files); like
    # `vllm serve` it takes the model as its first positional argument.
    assert facts["launcher"] == [f"{venv}/bin/python", f"{venv}/libexec/vllm_serve.py"]
    assert node["argv"][:3] == [*facts["launcher"], node["model"]]


def test_argv_is_launcher_model_and_serve_args_for_every_node(gb200_spec):
    plan = build_plan(gb200_spec)
    for inst in plan["instances"]:
        for node in inst["nodes"]:
            launcher = plan["hosts"][node["host"]]["vllm"]["launcher"]
            assert node["argv"] == [*launcher, node["model"], *node["serve_args"]]


def test_install_root_moves_every_venv_and_must_be_absolute():
    spec = make_spec(vllm_install_root="/srv/vllm/")
    plan = build_plan(spec)
    assert plan["vllm"]["install_root"] == "/srv/vllm"
    node = plan["instances"][0]["nodes"][0]
    assert node["argv"][0] == "/srv/vllm/0.33.0/bin/vllm"
    with pytest.raises(PlanError, match="pd_vllm_install_root is 'opt/vllm'; expected an absolute directory"):
        build_plan(make_spec(vllm_install_root="opt/vllm"))


def test_imex_domain_names_the_domain_that_lists_the_host(gb200_spec):
    plan = build_plan(gb200_spec)
    members = {h: d["name"] for d in plan["imex_domains"] for h in d["hosts"]}
    assert members, "the gb200 sample has IMEX domains"
    for name, host in plan["hosts"].items():
        assert host["imex_domain"] == members.get(name)


def test_only_example_connector_units_get_a_writable_kv_directory():
    pools = {"prefill": _small(4), "decode": _small(4)}
    model = {"served_name": "m", "path": "/m"}
    shared = build_plan(make_spec(1, 1, pools=pools, model=model, kv_connector="ExampleConnector",
                                  kv_shared_storage_path="/shared/kv"))
    assert {p for i in shared["instances"] for n in i["nodes"] for p in n["writable_paths"]} == {"/shared/kv"}
    nixl = build_plan(make_spec(1, 1, pools=pools, model=model))
    assert all(n["writable_paths"] == [] for i in nixl["instances"] for n in i["nodes"])


def test_router_workers_are_every_instance_url_by_role(gb200_spec):
    plan = build_plan(gb200_spec)
    # One worker per data-parallel rank, as vllm-router registers them.
    assert plan["router"]["workers"] == {
        role: sorted(f"{i['url']}@{r}" if i["parallelism"]["data_parallel_size"] > 1 else i["url"]
                     for i in plan["instances"] if i["role"] == role
                     for r in range(i["parallelism"]["data_parallel_size"]))
        for role in ("prefill", "decode")
    }
