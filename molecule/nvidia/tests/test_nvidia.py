"""The nvidia role's configuration per platform, on lab containers (no GPU:
package and hardware tasks are skipped by tag, see molecule.yml)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from nodes import address

ROOT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
JUDGE = Path(__file__).resolve().parents[1] / "judge.yml"
GB, HGX = "mol-nv-gb", "mol-nv-hgx"


def name(host) -> str:
    return host.backend.get_hostname()


def platform(host) -> dict:
    return json.loads(host.file("/etc/vllm-pd/nvidia-platform.json").content_string)


def test_package_selection_follows_the_platform(host):
    p = platform(host)
    if name(host) == GB:
        assert p["profile"] == "gb200_nvl72_tray" and p["architecture"] == "aarch64"
        assert p["packages"]["imex"] == ["nvidia-imex-580"] and p["packages"]["fabric_manager"] == []
    else:
        assert p["profile"] == "hgx_h200" and p["architecture"] == "x86_64"
        assert p["packages"]["fabric_manager"] == ["nvidia-fabricmanager-580", "libnvidia-nscq-580"]
        assert p["packages"]["imex"] == []
    assert p["packages"]["driver"] == ["nvidia-driver-580-open"]
    assert p["packages"]["cuda"] == ["cuda-toolkit-13-0"]


def test_cuda_repository_is_deb822_with_the_mapped_architecture(host):
    source = host.file("/etc/apt/sources.list.d/cuda.sources")
    assert source.exists and source.mode == 0o644
    arch = "sbsa" if name(host) == GB else "x86_64"
    text = source.content_string
    assert f"URIs: https://developer.download.nvidia.com/compute/cuda/repos/debian12/{arch}/" in text
    assert "Suites: /" in text
    assert "Signed-By: /usr/share/keyrings/cuda-archive-keyring.gpg" in text
    # No raw aarch64 in NVIDIA's URL, no duplicate list from cuda-keyring.
    assert "aarch64" not in text
    assert not host.file(f"/etc/apt/sources.list.d/cuda-debian12-{arch}.list").exists


def test_nouveau_off_and_imex_channel_only_on_imex_platforms(host):
    assert host.file("/etc/modprobe.d/blacklist-nouveau.conf").contains("^blacklist nouveau$")
    options = host.file("/etc/modprobe.d/nvidia-vllm-pd.conf")
    if name(host) == GB:
        assert options.content_string.splitlines()[-1] == "options nvidia NVreg_CreateImexChannel0=1"
    else:
        assert not options.exists


def test_imex_node_list_comes_from_the_plan(host):
    nodes = host.file("/etc/nvidia-imex/nodes_config.cfg")
    if name(host) == GB:
        # The IMEX domain rack-a has this tray only; the HGX board is in none.
        assert nodes.content_string == address(GB) + "\n"
    else:
        assert not nodes.exists
        assert not host.file("/etc/nvidia-imex").exists


def test_dcgm_counters_list_the_dashboards_fields(host):
    counters = host.file("/etc/dcgm-exporter/vllm-pd-counters.csv").content_string
    fields = [line.split(",")[0] for line in counters.splitlines() if not line.startswith("#")]
    assert "DCGM_FI_DEV_GPU_UTIL" in fields and "DCGM_FI_DEV_XID_ERRORS" in fields


def judge(host, report: dict) -> subprocess.CompletedProcess:
    extra = json.dumps({"judge_host": name(host), "nvidia_report": report})
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
    return subprocess.run(["ansible-playbook", str(JUDGE), "-i", INVENTORY, "-e", extra],
                          capture_output=True, text=True, check=False, cwd=ROOT, env=env)


def healthy_report(gpus: int, branch: str = "580.95.05") -> dict:
    """A healthy node in the layouts nvidia-smi and nvidia-imex-ctl print (the
    single-GPU ones are real: tests/fixtures/nvidia)."""
    imex = ("Nodes:\n"
            f"Node #0   - {address(GB)}      - READY                - Version: {branch}\n\n"
            " Nodes From\\To  0\n       0        C\nDomain State: UP\n")
    links = "".join(f"\t Link {k}: 26.562 GB/s\n" for k in range(18))
    nvlink = "".join(f"GPU {i}: NVIDIA GPU (UUID: GPU-{i})\n{links}" for i in range(gpus))
    return {"missing": [], "versions": f"{branch}\n" * gpus,
            "gpus": "".join(f"GPU {i}: NVIDIA GPU (UUID: GPU-{i})\n" for i in range(gpus)),
            "imex": imex, "imex_rc": 0, "nvlink_rc": 0, "nvlink": nvlink,
            "fabric": "".join(f"{i}, Completed, Success\n" for i in range(gpus)), "fabric_manager_state": "active"}


@pytest.mark.parametrize(("change", "expected"), [
    ({}, None),
    ({"versions": "575.57.08\n"}, "driver 575.57.08 is branch 575; expected branch 580"),
    ({"gpus": "GPU 0: NVIDIA GPU (UUID: GPU-0)\n"}, "nvidia-smi sees 1 GPU(s); the inventory declares"),
    ({"nvlink_rc": 1, "nvlink": ""}, "nvidia-smi nvlink --status failed (rc 1)"),
    ({"nvlink": "GPU 0: NVIDIA GPU (UUID: GPU-0)\n\t Link 0: <inactive>\n"},
     "NVLink not up: GPU 0 link 0 (<inactive>)"),
    ({"missing": ["nvidia-smi"]}, "nvidia-smi is not installed"),
])
def test_post_install_checks_fail_naming_host_and_expectation(host, change, expected):
    if change and name(host) == HGX:
        pytest.skip("the failure cases are platform-independent: judged on the tray")
    gpus = 4 if name(host) == GB else 8
    result = judge(host, {**healthy_report(gpus), **change})
    if expected is None:
        assert result.returncode == 0, result.stdout[-2000:]
    else:
        assert result.returncode != 0
        output = result.stdout + result.stderr
        assert f"host {name(host)}: " in output and expected in output, output[-2000:]


def test_fabric_manager_down_fails_on_the_hgx_board(host):
    if name(host) != HGX:
        pytest.skip("the tray has no fabric manager")
    result = judge(host, {**healthy_report(8), "fabric_manager_state": "inactive",
                          "fabric": "0, In Progress, N/A\n" * 8})
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "nvidia-fabricmanager is inactive, expected active" in output
    assert "GPUs not registered with the NVSwitch fabric" in output


def test_imex_domain_down_fails_on_the_tray(host):
    if name(host) != GB:
        pytest.skip("the HGX board has no IMEX domain")
    report = healthy_report(4)
    report["imex"] = report["imex"].replace("Domain State: UP", "Domain State: DOWN")
    result = judge(host, report)
    assert result.returncode != 0 and "IMEX domain is DOWN, expected UP" in result.stdout + result.stderr
