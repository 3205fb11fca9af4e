"""Pins: installed collections satisfy requirements.yml; Python pins are exact."""

from __future__ import annotations

import json
import subprocess

import yaml
from conftest import BIN, ENV, ROOT


def _installed_collections() -> dict[str, str]:
    out = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "list", "--format", "json"],
                         capture_output=True, text=True, env=ENV, cwd=ROOT, check=True).stdout
    found: dict[str, str] = {}
    # Earlier paths win, as Ansible resolves them.
    for collections in json.loads(out).values():
        for name, info in collections.items():
            found.setdefault(name, info["version"])
    return found


def test_installed_collections_satisfy_requirements_yml():
    wanted = yaml.safe_load((ROOT / "requirements.yml").read_text())["collections"]
    installed = _installed_collections()
    problems = [f"{c['name']}: want {c['version']}, have {installed.get(c['name'], 'none')}"
                for c in wanted if installed.get(c["name"]) != c["version"]]
    assert not problems, problems


def test_python_requirements_are_exact_pins():
    for name in ("requirements.txt", "requirements-test.txt", "requirements-vllm-parser.txt"):
        for line in (ROOT / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line and not line.startswith("-r") and line != "-e .":  # -e .: this project (lib/)
                assert "==" in line, f"{name}: {line} is not pinned with =="


def test_ansible_core_is_new_enough():
    out = subprocess.run([str(BIN / "ansible"), "--version"], capture_output=True, text=True, env=ENV,
                         check=True).stdout
    version = out.split("core ")[1].split("]")[0]
    major, minor = (int(part) for part in version.split(".")[:2])
    assert (major, minor) >= (2, 19), version


def test_filters_are_documented_for_ansible_doc():
    for name in ("pd_plan", "pd_plan_table"):
        out = subprocess.run([str(BIN / "ansible-doc"), "-t", "filter", name], capture_output=True, text=True,
                             env=ENV, cwd=ROOT, check=True).stdout
        assert f"plugins/filter/{name}.py" in out
        assert "EXAMPLES" in out
