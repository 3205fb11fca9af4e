"""playbooks/uninstall.yml removes what site.yml installs: every file the
deployment writes (as render.yml renders it, per host) lies under a path the
uninstall play of that host's group removes, except the NVIDIA stack's,
which stays by design; and the playbook parses and lists its plays."""

from __future__ import annotations

import json
import subprocess

import jinja2
import pytest
import yaml
from conftest import BIN, ENV, ROOT

pytestmark = pytest.mark.playbook

PLAYBOOK = ROOT / "playbooks" / "uninstall.yml"
# The NVIDIA stage's files stay with the driver (see the playbook's header).
NVIDIA_STAGE = ("/etc/modprobe.d/", "/etc/nvidia-imex/", "/etc/dcgm-exporter/", "/etc/vllm-pd/",
                "/etc/systemd/system/dcgm-exporter.service")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ansible-playbook"), *args], capture_output=True, text=True, env=ENV, cwd=ROOT,
                          check=False)


@pytest.mark.parametrize("inventory", ["gb200", "lab"])
def test_syntax(inventory):
    run = _run("--syntax-check", "-i", str(ROOT / "inventories" / inventory), str(PLAYBOOK))
    assert run.returncode == 0, run.stdout + run.stderr


def test_lists_router_workers_and_monitoring_plays():
    run = _run("--list-tasks", "-i", str(ROOT / "inventories" / "gb200"), str(PLAYBOOK))
    assert run.returncode == 0, run.stdout + run.stderr
    for task in ("Stop and disable the router", "Stop and disable every vLLM instance unit",
                 "Remove the vllm user (its home, vLLM's caches, goes with it)",
                 "Remove the checkpoint (uninstall_weights)",
                 "Stop and disable Prometheus, Alertmanager and Grafana",
                 "Purge Prometheus, Alertmanager and Grafana with their data (uninstall_packages)",
                 "Remove the nftables filter the firewall stage installed"):
        assert task in run.stdout, task


def _removed_paths(plan: dict) -> dict[str, set[str]]:
    """Group -> the paths the uninstall plays for that group remove, their
    Jinja rendered with the plan (each `default()` is the role's default)."""
    env = jinja2.Environment(undefined=jinja2.ChainableUndefined)
    removed: dict[str, set[str]] = {}
    for play in yaml.safe_load(PLAYBOOK.read_text()):
        if "hosts" not in play:
            continue
        play_vars = play.get("vars") or {}
        for group in play["hosts"].split(":"):
            paths = removed.setdefault(group, set())
            for task in play["tasks"]:
                module = task.get("ansible.builtin.file") or {}
                if module.get("state") != "absent":
                    continue
                for host, facts in plan["hosts"].items():
                    if group not in facts["groups"]:
                        continue
                    items = task.get("loop", [None])
                    if isinstance(items, str):  # the units of this host
                        items = facts["units"]
                    context = {"pd_plan": plan, "inventory_hostname": host}
                    for name, value in play_vars.items():
                        context[name] = env.from_string(str(value)).render(context)
                    for item in items:
                        item = env.from_string(item).render(context) if isinstance(item, str) else item
                        paths.add(env.from_string(module["path"]).render({**context, "item": item}))
    return removed


@pytest.mark.parametrize("discovery", ["static", "zmq"])
def test_every_file_the_deployment_writes_is_removed(tmp_path, discovery):
    out = tmp_path / "render"
    # zmq: each instance leader also gets its announcer unit.
    router = yaml.safe_load((ROOT / "inventories" / "gb200" / "group_vars" / "all" / "router.yml").read_text())
    router["pd_router"]["discovery"] = discovery
    (tmp_path / "router.json").write_text(json.dumps(router))
    run = _run(str(ROOT / "playbooks" / "render.yml"), "-i", str(ROOT / "inventories" / "gb200"),
               "-e", f"render_dir={out}", "-e", f"@{tmp_path / 'router.json'}")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    plan = json.loads((out / "plan.json").read_text())
    removed = _removed_paths(plan)
    left = []
    for host, facts in plan["hosts"].items():
        paths = set().union(*(removed.get(group, set()) for group in facts["groups"]))
        for file in (out / host).rglob("*"):
            if not file.is_file():
                continue
            path = "/" + str(file.relative_to(out / host))
            if path.startswith(NVIDIA_STAGE):
                continue
            if not any(path == p or path.startswith(p.rstrip("/") + "/") for p in paths):
                left.append(f"{host}:{path}")
    assert not left, f"site.yml writes files uninstall.yml leaves: {left}"
    announcers = [p for host in out.iterdir() if host.is_dir() for p in host.rglob("vllm-*-announce.service")]
    assert len(announcers) == (len(plan["instances"]) if discovery == "zmq" else 0), announcers
    # The checkpoint goes only when asked.
    assert plan["model"]["path"] in removed["prefill"]
