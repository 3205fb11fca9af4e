"""The pd_model_sync action prints bytes done of total while a copy runs, then the sync's result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BIN, ENV, ROOT

pytestmark = pytest.mark.playbook

TOOL = ROOT / "roles" / "model_weights" / "files" / "pd_model_sync.py"
SYNC = """
- name: Sync with progress
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Sync the checkpoint
      pd_model_sync:
        name: tiny
        argv: {argv}
        tool: {tool}
        status_file: {status}
        interval: 1
        report_every: 1
      register: synced
    - name: Show the result
      ansible.builtin.debug:
        msg: "RESULT {{{{ synced.sync | to_json }}}} CHANGED {{{{ synced.changed }}}}"
"""


def _setup(tmp_path: Path) -> tuple[Path, Path, Path, list[str]]:
    source = tmp_path / "source"
    source.mkdir()
    (source / "config.json").write_text("{}")
    header = json.dumps({"w": {"dtype": "U8", "shape": [4_000_000], "data_offsets": [0, 4_000_000]}}).encode()
    (source / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(4_000_000))
    dest, status = tmp_path / "model", tmp_path / "model.sync-status.json"
    wrapper = tmp_path / "pd-model-sync"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {TOOL} \"$@\"\n")
    wrapper.chmod(0o755)
    book = tmp_path / "sync.yml"
    argv = [str(wrapper), "sync", str(dest), "--revision", "r1", "--from-dir", str(source)]
    book.write_text(SYNC.format(argv=json.dumps(argv), tool=wrapper, status=status))
    return book, dest, status, argv


def _play(book: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "ansible-playbook"), str(book), "-i", "localhost,", "-c", "local",
                             "-e", f"ansible_python_interpreter={sys.executable}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)


def _until(run: subprocess.Popen, text: str, status: Path) -> str:
    """Read the output until a line holds TEXT, let the stopped sync go on, return all the output."""
    lines = []
    try:
        for line in run.stdout:
            lines.append(line)
            if text in line:
                os.kill(json.loads(status.read_text())["pid"], signal.SIGCONT)
                break
        lines += run.stdout.readlines()
    finally:
        run.wait(timeout=120)
    return "".join(lines)


# The sync stops itself halfway through the shard until the test lets it go on.
STOPPED = {"PD_MODEL_SYNC_STATUS_EVERY": "0", "PD_MODEL_SYNC_FAULT": "stop@model.safetensors:partial"}


def test_progress_lines_while_copying_and_the_result(tmp_path):
    book, dest, status, _argv = _setup(tmp_path)
    run = _play(book, {**ENV, **STOPPED})
    out = _until(run, "tiny on localhost: copying", status)
    assert run.returncode == 0, out
    copying = next(line for line in out.splitlines() if "tiny on localhost: copying" in line)
    # Halfway through a 4 MB shard: bytes done of total, with the share and the file.
    assert " MB of 4.0 MB (" in copying and "1/2 files done, model.safetensors" in copying, copying
    assert "tiny on localhost: done 4.0 MB of 4.0 MB (100%)" in out, out
    assert '"state": "synced"' in out and "CHANGED True" in out, out
    assert (dest / ".pd-verified").read_text() == "r1\n"


def test_a_sync_left_running_is_followed_to_its_end(tmp_path):
    book, dest, status, argv = _setup(tmp_path)
    # An earlier run's sync, still running (stopped here) after its ansible-playbook went away.
    started = subprocess.run([*argv, "--status-file", str(status), "--detach"], env={**os.environ, **STOPPED},
                             capture_output=True, text=True, check=True)
    assert json.loads(started.stdout)["state"] == "started"
    run = _play(book, ENV)
    out = _until(run, "following the sync already running", status)
    assert run.returncode == 0, out
    assert "tiny on localhost: done 4.0 MB of 4.0 MB (100%)" in out, out
    # Its own sync then finds the copy verified: nothing copied twice.
    assert '"state": "verified"' in out and "CHANGED False" in out, out
    assert (dest / ".pd-verified").read_text() == "r1\n"
