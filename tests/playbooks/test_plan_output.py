"""What a run prints about the plan: a per-pool summary within 120 columns
(the full table behind -v and in render_dir/plan.txt), the plan's warnings
as Ansible warnings, and a bad inventory's cause once, before any host is
touched. The real ansible-playbook on inventories as users write them (the
288-tray bound is tests/unit/test_plan_summary.py's, in-process)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import BIN, ENV, ROOT

pytestmark = pytest.mark.playbook

GB200 = ROOT / "inventories" / "gb200"
SUMMARY_TASK = "TASK [pd_plan : Show the plan (one line per pool; every instance node with -v)]"


def playbook(name: str, inventory: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ansible-playbook"), str(ROOT / "playbooks" / name), "-i", str(inventory), *extra],
        capture_output=True, text=True, env=ENV, cwd=ROOT, check=False,
    )


def summary_block(stdout: str) -> list[str]:
    """The lines the summary task printed, as the terminal shows them."""
    after = stdout.split(SUMMARY_TASK, 1)[1]
    # The summary task's output ends at the next task or, when it is the
    # play's last task, at the recap.
    block = re.split(r"\n(?:TASK \[|PLAY RECAP)", after, maxsplit=1)[0].splitlines()
    start = next(i for i, line in enumerate(block) if line.strip() == "msg: |-")
    return [line for line in block[start + 1:] if line.strip()]


def _copy_with(tmp_path: Path, pool: str, **changes) -> Path:
    inventory = tmp_path / "inventory"
    shutil.copytree(GB200, inventory)
    path = inventory / "group_vars" / f"{pool}.yml"
    data = yaml.safe_load(path.read_text())
    data["pd_pool"].update(changes)
    path.write_text(yaml.safe_dump(data))
    return inventory


def test_gb200_summary_fits_120_columns_and_the_full_table_is_behind_v():
    run = playbook("plan.yml", GB200)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = summary_block(run.stdout)
    assert max(len(line) for line in lines) <= 120, "\n".join(lines)
    assert any(line.split()[:1] == ["prefill"] for line in lines) and any(
        line.split()[:1] == ["decode"] for line in lines)
    # The full table (a row per instance node) is not printed by default...
    assert "headless, dp start rank" not in run.stdout
    # ...but with -v.
    verbose = playbook("plan.yml", GB200, "-v")
    assert verbose.returncode == 0, verbose.stdout + verbose.stderr
    assert "headless, dp start rank" in verbose.stdout


def test_render_writes_the_full_table_to_plan_txt(tmp_path):
    out = tmp_path / "render"
    run = playbook("render.yml", GB200, "-e", f"render_dir={out}", "-e", "render_hosts=")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    table = (out / "plan.txt").read_text()
    plan = json.loads((out / "plan.json").read_text())
    # One row per instance node, as the summary does not have them.
    for instance in plan["instances"]:
        assert re.search(rf"^{re.escape(instance['name'])}\s+{instance['role']}\s", table, re.M), instance["name"]
    assert "headless, dp start rank" in table
    assert "headless, dp start rank" not in run.stdout


def test_plan_warnings_are_ansible_warnings(tmp_path):
    inventory = _copy_with(tmp_path, "prefill", enforce_eager=True, cudagraph_capture_sizes=[1, 2])
    run = playbook("plan.yml", inventory)
    assert run.returncode == 0, run.stdout + run.stderr
    output = run.stdout + run.stderr
    warning = "[WARNING]: pd_plan: pd_pool (prefill): enforce_eager disables CUDA graphs"
    assert output.count(warning) == 1, output
    assert "warnings (printed as Ansible warnings)" in run.stdout


def test_bad_inventory_says_its_cause_once_and_touches_no_host(tmp_path):
    # 3 GPUs per instance cannot be DP4: the planner names the pool and the three numbers.
    inventory = _copy_with(tmp_path, "prefill", gpus_per_instance=3)
    run = playbook("site.yml", inventory)
    output = run.stdout + run.stderr
    assert run.returncode != 0
    cause = "but gpus_per_instance is 3"
    assert output.count(cause) == 1, output
    # One block: the planner's message under one header line, unwrapped.
    lines = output.splitlines()
    at = next(i for i, line in enumerate(lines) if cause in line)
    assert "Invalid inventory, nothing was changed:" in lines[at - 1]
    assert "pd_pool (prefill)" in lines[at]
    # Ansible's wrapping of a failing filter is gone.
    assert "caused by" not in output and "Finalization of task args" not in output
    # Nothing after the plan ran; no host was contacted.
    assert "PLAY [Preflight]" not in output
    recap = output.split("PLAY RECAP", 1)[1]
    assert re.findall(r"unreachable=(\d+)", recap) and set(re.findall(r"unreachable=(\d+)", recap)) == {"0"}
    assert set(re.findall(r"changed=(\d+)", recap)) == {"0"}
