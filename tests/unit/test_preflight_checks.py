"""Preflight's checks and the read-only check run (playbooks/check.yml) on
this machine, over a local connection: facts are read afresh (a stale cache
from another machine is not judged), every missing tool is named, a CPU node
says why it gets no GPU checks, and the run changes nothing."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
INVENTORY = ROOT / "tests" / "fixtures" / "nvidia" / "one-gpu-inventory.yml"
PORT_CHECK = ROOT / "roles" / "preflight" / "files" / "pd_port_check.py"


def _env(cache: Path) -> dict:
    return {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(cache),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.fixture(scope="module")
def stale_run(tmp_path_factory) -> subprocess.CompletedProcess:
    """check.yml after planting another machine's facts in the cache."""
    cache = tmp_path_factory.mktemp("facts")
    subprocess.run([str(BIN / "ansible"), "gpu-0", "-i", str(INVENTORY), "-m", "ansible.builtin.setup",
                    "-a", "gather_subset=min,network"], env=_env(cache), cwd=ROOT, check=True, capture_output=True)
    cached = next(cache.glob("*gpu-0"))
    wrapper = json.loads(cached.read_text())
    facts = json.loads(wrapper["__payload__"])
    facts.update(ansible_distribution="Plan9", ansible_distribution_version="4",
                 ansible_all_ipv4_addresses=["127.0.0.1"])
    wrapper["__payload__"] = json.dumps(facts)
    cached.write_text(json.dumps(wrapper))
    return subprocess.run([str(BIN / "ansible-playbook"), "playbooks/check.yml", "-i", str(INVENTORY)],
                          env=_env(cache), cwd=ROOT, capture_output=True, text=True, check=False)


@pytest.mark.playbook
def test_preflight_judges_fresh_facts_not_the_cache(stale_run):
    real = platform.freedesktop_os_release()
    out = stale_run.stdout
    assert "Plan9" not in out, out[-3000:]
    assert f"gpu-0: {real['NAME'].split()[0]} " in out and "os: gpu-0:" in out, out[-3000:]
    # The cache said 127.0.0.1 was there; the fresh facts (loopback is never
    # in all_ipv4_addresses) say otherwise, in preflight's own words.
    assert "gpu-0 has no address 127.0.0.1 in pd_cluster_cidr 127.0.0.0/8; it has" in out, out[-3000:]
    assert "has no attribute" not in out


@pytest.mark.playbook
def test_check_run_reports_every_host_and_changes_nothing(stale_run):
    out = stale_run.stdout
    assert stale_run.returncode == 2, out[-3000:]
    # The GPU node: a missing nvidia-smi is named per check, not a bare rc.
    if subprocess.run(["sh", "-c", "command -v nvidia-smi"], capture_output=True, check=False).returncode != 0:
        assert "skip gpus: gpu-0: nvidia-smi is not installed yet (the nvidia stage installs the driver)" in out
        assert "fail driver: host gpu-0: nvidia-smi is not installed (from the NVIDIA driver" in out
    assert "skip nvlink: host gpu-0: one GPU (pd_gpus 1): no GPU peer to reach over NVLink" in out
    # The CPU node says why it gets no GPU checks.
    assert "skip gpus: cpu-0: no NVIDIA GPU planned here (device cpu in the plan)" in out
    assert "skip nvidia: cpu-0 has no NVIDIA GPU in the plan (device cpu)" in out
    assert "gpu-0 is not healthy: " in out and "cpu-0 is not healthy: " in out
    recap = out[out.index("PLAY RECAP"):]
    for host in ("gpu-0", "cpu-0"):
        line = next(line for line in recap.splitlines() if line.startswith(host))
        assert "changed=0" in line, line


def test_port_check_names_a_missing_ss():
    result = subprocess.run([sys.executable, str(PORT_CHECK), '[{"port": 8100, "unit": "vllm-prefill-0"}]'],
                            env={"PATH": "/nonexistent"}, capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "'ss'" in json.loads(result.stdout)["error"]
