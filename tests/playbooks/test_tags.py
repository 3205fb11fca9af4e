"""site.yml's stages by tag: `--tags workers` runs the worker stage and the
plan (tagged always), nothing of the other stages."""

from __future__ import annotations

import re
import subprocess

import pytest
from conftest import BIN, ENV, ROOT

pytestmark = pytest.mark.playbook

# site.yml's stage plays and their tags.
STAGES = {
    "Preflight": "preflight",
    "Firewall": "firewall",
    "NVIDIA stack on the GPU nodes": "nvidia",
    "Install vLLM on the worker nodes": "vllm",
    "Sync and verify the model weights": "weights",
    "Render and (re)start the worker instances": "workers",
    "Deploy the router": "router",
    "Deploy the front door": "front_door",
    "Deploy monitoring": "monitoring",
    "Drain and remove instances the plan no longer has": "retire",
}
WORKERS = "Render and (re)start the worker instances"


def site(*args: str) -> str:
    run = subprocess.run(
        [str(BIN / "ansible-playbook"), str(ROOT / "playbooks" / "site.yml"), "-i", str(ROOT / "inventories" / "gb200"),
         *args],
        capture_output=True, text=True, env=ENV, cwd=ROOT, check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def selected_tasks(*tags: str) -> dict[str, list[str]]:
    """Play name -> the task names --list-tasks selects under --tags."""
    plays: dict[str, list[str]] = {}
    current = None
    for line in site("--tags", ",".join(tags), "--list-tasks").splitlines():
        play = re.match(r"\s+play #\d+ \([^)]*\): (.+?)\tTAGS:", line)
        if play:
            current = plays.setdefault(play.group(1), [])
        elif current is not None and "\tTAGS: " in line:
            current.append(line.split("\tTAGS: ")[0].strip())
    return plays


def test_every_stage_has_its_tag():
    out = site("--list-tags")
    play_tags = dict(re.findall(r"play #\d+ \([^)]*\): (.+?)\tTAGS: \[([^\]]*)\]", out))
    assert play_tags["Plan the cluster"] == "always"
    assert play_tags["Read network facts of hosts without pd_address"] == "always"
    assert {play: play_tags.get(play) for play in STAGES} == STAGES
    # The NVIDIA stage's own tags still select inside it.
    assert re.search(r"TASK TAGS: \[.*nvidia-check.*\]", out)


def _real(tasks: list[str]) -> list[str]:
    """Tasks other than the plan's and argument-spec validation (always run,
    controller only)."""
    return [t for t in tasks if not t.startswith("pd_plan : ") and "Validating arguments against arg spec" not in t]


def test_tags_workers_selects_the_worker_stage_and_the_plan():
    plays = selected_tasks("workers")
    assert "pd_plan : Plan the cluster from the inventory" in plays["Plan the cluster"]
    assert "pd_plan : Show the plan (one line per pool; every instance node with -v)" in plays["Plan the cluster"]
    assert _real(plays[WORKERS]) == ["Render this host's units and env files", "Restart what changed, rolling per pool",
                                     "Start the announcers and wait until each instance is announced"]
    # Every other stage contributes nothing that touches a host (the NVIDIA
    # role's fresh facts included).
    others = {play: _real(plays[play]) for play in STAGES if play != WORKERS}
    assert all(not tasks for tasks in others.values()), others


def test_tags_monitoring_selects_only_monitoring():
    plays = selected_tasks("monitoring")
    monitoring = _real(plays["Deploy monitoring"])
    assert "Grafana with the generated dashboards (pd_monitoring.grafana_enabled)" in monitoring
    assert any(task.startswith("prometheus : ") for task in monitoring), monitoring
    assert all(not _real(plays[play]) for play in STAGES if play != "Deploy monitoring")
    assert not _real(plays[WORKERS])


def test_tags_nvidia_check_still_selects_the_read_only_checks():
    plays = selected_tasks("nvidia-check")
    nvidia = _real(plays["NVIDIA stack on the GPU nodes"])
    assert "nvidia : Read this host's facts afresh (a cached copy may be another machine's)" in nvidia
    assert not any("Install" in task for task in nvidia), nvidia
