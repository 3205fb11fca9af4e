"""pd_files on a host (root ""): the real ansible-playbook against the local connection, files
under a temporary directory. What the roles rely on: unchanged files cost no module run, and
anything that differs (content, mode) goes through template/copy with their check mode and diff."""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
from pathlib import Path

import yaml
from conftest import BIN, ENV, ROOT


def _playbook(tmp_path: Path) -> Path:
    templates = tmp_path / "templates"
    templates.mkdir(exist_ok=True)
    (templates / "greeting.j2").write_text("# {{ ansible_managed }}\nhello {{ who }}\n")
    owner, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    play = [{
        "name": "pd_files on the local host", "hosts": "localhost", "connection": "local",
        "gather_facts": False,
        "tasks": [{
            "name": "Write the files", "register": "written",
            "pd_files": {"root": "", "files": [
                {"dest": str(tmp_path / "out" / "greeting"), "template": "greeting.j2",
                 "vars": {"who": "{{ who }}"}, "mode": "0640", "owner": owner, "group": group},
                {"dest": str(tmp_path / "out" / "plain.json"), "content": "{\"a\": 1}\n", "mode": "0644"},
            ]},
        }, {
            "name": "Show what changed", "ansible.builtin.debug": {"msg": "labels={{ written.changed_labels }}"},
        }],
    }]
    path = tmp_path / "play.yml"
    path.write_text(yaml.safe_dump(play, sort_keys=False))
    (tmp_path / "out").mkdir(exist_ok=True)
    return path


def _run(playbook: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**ENV, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    return subprocess.run([str(BIN / "ansible-playbook"), str(playbook), "-i", "localhost,", "-e", "who=world",
                           "-e", f"ansible_python_interpreter={BIN / 'python'}",
                           *args], capture_output=True, text=True, env=env, cwd=ROOT, check=False)


def _changed(result: subprocess.CompletedProcess) -> int:
    assert result.returncode == 0, result.stdout + result.stderr
    return int(result.stdout.split("changed=")[-1].split()[0])


def test_unchanged_files_cost_no_module_run_and_changes_go_through_template_and_copy(tmp_path):
    playbook = _playbook(tmp_path)
    greeting, plain = tmp_path / "out" / "greeting", tmp_path / "out" / "plain.json"

    assert _changed(_run(playbook)) == 1
    assert greeting.read_text() == "# Ansible managed\nhello world\n"
    assert oct(greeting.stat().st_mode & 0o777) == "0o640" and plain.read_text() == '{"a": 1}\n'

    # Nothing to do: one command read every file's state, no module (AnsiballZ) ran.
    again = _run(playbook, "-vvv")
    assert _changed(again) == 0
    assert "AnsiballZ_" not in again.stdout

    # A mode that drifted is put back (through the file's own action).
    plain.chmod(0o600)
    assert _changed(_run(playbook)) == 1
    assert oct(plain.stat().st_mode & 0o777) == "0o644"

    # Drifted content: check mode with --diff reports it and writes nothing; a real run restores it.
    greeting.write_text("edited by hand\n")
    check = _run(playbook, "--check", "--diff")
    assert _changed(check) == 1 and "hello world" in check.stdout and "edited by hand" in check.stdout
    assert greeting.read_text() == "edited by hand\n"
    assert _changed(_run(playbook)) == 1
    assert greeting.read_text() == "# Ansible managed\nhello world\n"

    # A missing file is written again.
    plain.unlink()
    assert _changed(_run(playbook)) == 1 and plain.exists()
