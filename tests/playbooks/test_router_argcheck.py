"""The router's arguments are checked by the installed vllm-router 0.1.17
itself (roles/vllm_router/files/pd-router-check: its launcher's parser, its
PD checks and the Rust router's construction, nothing started) before the
role writes the unit and restarts the router. The router is the real one,
from the lab's wheelhouse (.cache/vllm-router-0.1.17, as the front door's
real-router test makes it)."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
from conftest import ROOT, inventory_spec, local_play
from pd_planner import build_plan

pytestmark = pytest.mark.playbook

CHECKER = ROOT / "roles" / "vllm_router" / "files" / "pd-router-check"
VENV = ROOT / ".cache" / "vllm-router-0.1.17"
WHEEL = sorted((ROOT / ".lab" / "wheelhouse").glob("vllm_router-0.1.17-*.whl"))


@pytest.fixture(scope="module")
def router_python() -> str:
    """The venv's Python, with vllm-router 0.1.17 (made once from the wheelhouse, reused)."""
    if not (VENV / ".installed").is_file():
        if not WHEEL:
            pytest.fail("vllm-router 0.1.17 is neither in .cache nor in the lab wheelhouse (labctl.py assets)")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "--no-index", "--find-links",
                        str(WHEEL[0].parent), "vllm-router==0.1.17"], check=True)
        (VENV / ".installed").write_text("vllm-router==0.1.17\n")
    return str(VENV / "bin" / "python")


def check(python: str, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([python, str(CHECKER), "--", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def plans() -> dict:
    found = {name: build_plan(inventory_spec(ROOT / "inventories" / name)) for name in ("lab", "gb200")}
    # Static mode: the unit lists every worker (the lab uses discovery).
    spec = inventory_spec(ROOT / "inventories" / "lab")
    found["lab-static"] = build_plan({**spec, "router": {**spec["router"], "discovery": "static"}})
    return found


@pytest.mark.parametrize("name", ["lab", "gb200", "lab-static"])
def test_the_planned_arguments_pass_the_real_router(router_python, plans, name):
    for host in plans[name]["router"]["hosts"]:
        result = check(router_python, [*host["args"], "--log-level", "info"])
        assert result.returncode == 0, f"{host['host']}: {result.stderr}"
        assert "accepts" in result.stdout


def _replace(args: list[str], flag: str, value: str) -> list[str]:
    args = list(args)
    args[args.index(flag) + 1] = value
    return args


# What the planner cannot know but the router refuses: flags through
# pd_router.extra_args, values of the wrong syntax, numbers its unsigned
# fields cannot hold, and a PD command line without a pool.
REJECTED = {
    "unknown flag": (lambda a: [*a, "--retry-max-retires", "3"], "unrecognized arguments: --retry-max-retires"),
    "float syntax": (lambda a: [*a, "--cache-threshold", "high"], "invalid float value: 'high'"),
    "bad choice": (lambda a: [*a, "--kv-connector", "p2pnccl"], "argument --kv-connector: invalid choice"),
    "negative size": (lambda a: _replace(a, "--queue-size", "-1"), "OverflowError"),
    "port too large": (lambda a: _replace(a, "--prometheus-port", "70000"), "OverflowError"),
    "no decode": (lambda a: [x for i, x in enumerate(a) if x != "--decode" and (i == 0 or a[i - 1] != "--decode")],
                  "PD disaggregation mode requires --decode"),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_the_real_router_rejects_what_it_would_fail_on(router_python, plans, case):
    change, reason = REJECTED[case]
    args = change(plans["lab-static"]["router"]["args"])
    result = check(router_python, args)
    assert result.returncode == 1, result.stdout + result.stderr
    assert reason in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, "one line, not argparse's whole usage"


PLAY = """
- name: The role's argument check on a plan
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Check
      ansible.builtin.include_role:
        name: vllm_router
        tasks_from: check_args.yml
    - name: Reached only when the check passed
      ansible.builtin.debug:
        msg: unit would be written now
"""


def _play(tmp_path, router_python: str, plan: dict) -> subprocess.CompletedProcess:
    # The role finds the venv as <install root>/<version>/bin/python.
    root = tmp_path / "opt"
    root.mkdir(exist_ok=True)
    link = root / "0.1.17"
    if not link.exists():
        link.symlink_to(VENV)
    return local_play(tmp_path, PLAY, {
        "pd_plan": plan, "vllm_router_render_host": plan["router"]["hosts"][0]["host"],
        "vllm_router_install_root": str(root), "vllm_router_check_args": str(tmp_path / "pd-router-check")})


def test_the_role_refuses_rejected_arguments_before_it_writes_the_unit(router_python, plans, tmp_path):
    good = _play(tmp_path, router_python, plans["lab"])
    assert good.returncode == 0, good.stdout + good.stderr
    assert "unit would be written now" in good.stdout
    bad = copy.deepcopy(plans["lab"])
    bad["router"]["hosts"][0]["args"] += ["--disable-retry", "true"]
    result = _play(tmp_path, router_python, bad)
    assert result.returncode != 0
    assert "rejects the planned arguments" in result.stdout
    assert "unrecognized arguments: --disable-retry true" in result.stdout
    assert "unit would be written now" not in result.stdout


def test_the_check_comes_before_anything_the_router_would_run_with():
    """main.yml: the check precedes the env file, the live removal, the unit and the restart, so a
    rejected value changes nothing the running router uses."""
    import yaml

    tasks = yaml.safe_load((ROOT / "roles/vllm_router/tasks/main.yml").read_text())
    names = [task["name"] for task in tasks]
    check = names.index("Check the router's new arguments before its unit changes")
    for later in ("Write the router environment (root-only; may hold the API key)",
                  "Remove dropped workers from the running router",
                  "Write the router unit (verified by systemd-analyze before it lands)"):
        assert check < names.index(later), later
    # The (re)start is reconcile.yml's first task, imported after the check.
    reconcile = next(i for i, task in enumerate(tasks) if task.get("ansible.builtin.import_tasks") == "reconcile.yml")
    assert check < reconcile
    first = yaml.safe_load((ROOT / "roles/vllm_router/tasks/reconcile.yml").read_text())[0]
    assert first["name"] == "Start or restart the router" and "ansible.builtin.systemd_service" in first
