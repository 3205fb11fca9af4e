"""pd-worker-gate records the configuration a worker starts with: the
unit's ExecStartPre (`backoff ... UNIT_FILE ENV_FILE`) writes the digest of
both files into the unit's RuntimeDirectory, and `config-state` (run by the
vllm_worker role) compares it with the files installed now."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from conftest import ROOT

GATE = ROOT / "roles" / "pd_systemd" / "files" / "pd-worker-gate"


def gate(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(GATE), *map(str, args)], capture_output=True, text=True, check=False,
                          env={**os.environ, "MAINPID": ""})


def state(state_dir: Path, *files: Path) -> dict:
    result = gate("config-state", state_dir, *files)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def config(tmp_path: Path) -> tuple[Path, Path, Path]:
    unit, env, run = tmp_path / "vllm-prefill-0.service", tmp_path / "vllm-prefill-0.env", tmp_path / "run"
    unit.write_text("[Service]\nExecStart=/bin/true\n")
    env.write_text("A=1\n")
    run.mkdir()
    return unit, env, run


def test_a_start_records_its_files_and_a_later_edit_shows_as_a_difference(tmp_path):
    unit, env, run = config(tmp_path)
    before = state(run, unit, env)
    assert before["running"] is None  # never started: unknown, so a rollout restarts it
    assert gate("backoff", run, 10, 300, unit, env).returncode == 0
    assert (run / "failed-starts").read_text() == "1\n"  # the backoff itself still counts the start
    started = state(run, unit, env)
    assert started["running"] == started["installed"] == before["installed"]
    env.write_text("A=2\n")  # another run rewrites the env file, the process keeps the old one
    edited = state(run, unit, env)
    assert edited["running"] == started["running"] != edited["installed"]
    assert gate("backoff", run, 10, 300, unit, env).returncode == 0  # the restart records the new files
    again = state(run, unit, env)
    assert again["running"] == again["installed"] == edited["installed"]


def test_the_digest_covers_both_files_and_their_paths(tmp_path):
    unit, env, run = config(tmp_path)
    first = state(run, unit, env)["installed"]
    unit.write_text(unit.read_text() + "Nice=10\n")
    assert state(run, unit, env)["installed"] != first
    # The same bytes under another name are another configuration.
    other = tmp_path / "vllm-prefill-1.env"
    other.write_text(env.read_text())
    assert state(run, unit, other)["installed"] != state(run, unit, env)["installed"]
    # A missing file is a state of its own, not an error.
    env.unlink()
    missing = state(run, unit, env)
    assert missing["installed"] != first and missing["running"] is None


def test_a_unit_from_before_the_records_still_starts_and_records_nothing(tmp_path):
    unit, env, run = config(tmp_path)
    assert gate("backoff", run, 10, 300).returncode == 0
    assert not (run / "running-config").exists()
    assert state(run, unit, env)["running"] is None


def test_config_state_needs_a_file(tmp_path):
    result = gate("config-state", tmp_path)
    assert result.returncode == 2 and "config-state STATE_DIR CONFIG_FILE" in result.stderr
