"""A second site.yml against the same inventory is refused, naming who holds the lock and since when."""

from __future__ import annotations

import getpass
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import BIN, ENV, ROOT

pytestmark = pytest.mark.playbook

# A run that takes the lock (the same tasks file site.yml uses) and holds it
# until the test creates its release file.
HOLDER = """
- name: Hold the run lock
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Take the run lock
      ansible.builtin.import_tasks: {tasks}
      vars:
        run_lock_state: acquired
        run_lock_playbook: holder.yml
    - name: Wait for the test to let go
      ansible.builtin.wait_for:
        path: "{{{{ release_file }}}}"
        timeout: 300
    - name: Release the run lock
      ansible.builtin.import_tasks: {tasks}
      vars:
        run_lock_state: released
"""


def _playbook(*args: str) -> list[str]:
    return [str(BIN / "ansible-playbook"), *args]


@pytest.fixture
def holder(tmp_path):
    lock, release = tmp_path / "run.lock", tmp_path / "release"
    book = tmp_path / "holder.yml"
    book.write_text(HOLDER.format(tasks=ROOT / "playbooks" / "tasks" / "run_lock.yml"))
    argv = _playbook(str(book), "-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}",
                     "-e", f"pd_run_lock_file={lock}",
                     "-e", f"release_file={release}")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV, cwd=ROOT)
    deadline = time.monotonic() + 120
    while not lock.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "the holder never took the lock"
        time.sleep(0.2)
    yield proc, lock, release, argv
    # Release first: ansible's task worker runs in its own session, so killing
    # ansible-playbook alone would leave it waiting out wait_for's timeout.
    release.touch()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_a_second_site_run_is_refused_with_holder_and_time(holder):
    proc, lock, _release, _argv = holder
    recorded = json.loads(lock.read_text())
    assert recorded["pid"] == proc.pid
    # The real site.yml in check mode; every host points at a closed loopback
    # port, so nothing past the lock could reach a node even if it ran.
    second = subprocess.run(
        _playbook(str(ROOT / "playbooks" / "site.yml"), "-i", str(ROOT / "inventories" / "gb200"), "--check",
                  "-e", f"pd_run_lock_file={lock}", "-e", "ansible_host=127.0.0.1", "-e", "ansible_port=1"),
        capture_output=True, text=True, env=ENV, cwd=ROOT, check=False)
    out = second.stdout + second.stderr
    assert second.returncode != 0, out
    assert (f"Another run holds the lock of this inventory: {getpass.getuser()}@{socket.gethostname()} "
            f"(ansible-playbook pid {proc.pid}, holder.yml) since {recorded['since']} (0 min ago)") in out, out
    # Refused before any stage: no other play started.
    assert out.count("PLAY [") == 1, out
    assert json.loads(lock.read_text()) == recorded


def test_the_lock_is_released_at_the_end(holder):
    proc, lock, release, _argv = holder
    release.touch()
    assert proc.wait(timeout=120) == 0, proc.stdout.read()
    assert not lock.exists()


def test_a_lock_left_by_a_killed_run_is_taken_over(holder):
    proc, lock, release, argv = holder
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert lock.exists()
    release.touch()
    rerun = subprocess.run(argv, capture_output=True, text=True, env=ENV, cwd=ROOT, check=False)
    out = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, out
    assert f"Taking over the run lock {lock}" in out and f"pid {proc.pid} no longer runs" in out, out
    assert not lock.exists()


def test_site_takes_the_lock_first_and_releases_it_last():
    listed = subprocess.run(
        _playbook(str(ROOT / "playbooks" / "site.yml"), "-i", str(ROOT / "inventories" / "gb200"), "--list-tasks",
                  "--tags", "workers"),
        capture_output=True, text=True, env=ENV, cwd=ROOT, check=True).stdout
    tasks = [line.strip().split("\t")[0] for line in listed.splitlines()
             if "\tTAGS:" in line and not line.strip().startswith("play #")]
    assert tasks[0] == "Run lock of this inventory: {{ run_lock_state }}", listed
    assert tasks[-1] == tasks[0] and len(tasks) > 2, listed
    # Both lock plays are tagged always: a --tags run is locked too.
    assert listed.count("one run at a time (a second run against this inventory is refused)\tTAGS: [always]") == 1
    assert "Release the run lock\tTAGS: [always]" in listed


def test_stale_rule_pid_on_this_host_age_from_another():
    sys.path.insert(0, str(ROOT / "plugins" / "action"))
    try:
        from pd_run_lock import stale_reason
    finally:
        sys.path.pop(0)
    now = time.time()
    here = socket.gethostname()
    # This host: a gone pid frees it, and so does a reused one that is no ansible-playbook
    # (a live holder is refused: test_a_second_site_run_is_refused_with_holder_and_time).
    for pid in (2**22 + 1, os.getpid()):
        assert stale_reason({"host": here, "pid": pid, "epoch": now}, now, 60) == f"pid {pid} no longer runs"
    # Another host: its pid cannot be checked, its age can.
    assert stale_reason({"host": "ctl-other", "pid": 1, "epoch": now - 30}, now, 60) is None
    assert "older than 60 s" in stale_reason({"host": "ctl-other", "pid": 1, "epoch": now - 61}, now, 60)
    assert stale_reason({"unreadable": True}, now, 60) == "the lock file is unreadable"

