"""The NVIDIA stack per platform and the post-install checks (pure functions
the nvidia role calls with what nvidia-smi and nvidia-imex-ctl print)."""

from __future__ import annotations

import pytest
from pd_planner import dashboards, nvidia
from pd_planner.errors import PlanError
from pd_planner.planner import build_plan

UBUNTU = {"distribution": "Ubuntu", "version": "24.04", "driver_branch": 580, "cuda_version": "13.0"}


def test_gb200_tray_uses_sbsa_imex_and_no_fabric_manager():
    p = nvidia.platform("gb200_nvl72_tray", host="t1", architecture="aarch64", **UBUNTU)
    # NVIDIA's CUDA repo calls Grace "sbsa", never the raw aarch64 fact.
    assert p["cuda_repo_path"] == "ubuntu2404/sbsa/"
    assert p["cuda_keyring_path"] == "ubuntu2404/sbsa/cuda-keyring_1.1-1_all.deb"
    assert p["packages"]["driver"] == ["nvidia-driver-580-open"]
    assert p["packages"]["imex"] == ["nvidia-imex-580"]
    assert p["packages"]["fabric_manager"] == []
    assert p["packages"]["cuda"] == ["cuda-toolkit-13-0"]
    assert p["modprobe_nvidia"] == ["options nvidia NVreg_CreateImexChannel0=1"]
    assert "nvidia-imex" in p["services"] and "nvidia-fabricmanager" not in p["services"]
    assert p["held"] == ["nvidia-driver-580-open", "nvidia-imex-580"]


def test_hgx_h200_uses_x86_64_and_the_fabric_manager_of_its_driver():
    p = nvidia.platform("hgx_h200", host="h1", architecture="x86_64",
                        **{**UBUNTU, "version": "22.04", "driver_branch": 575})
    assert p["cuda_repo_path"] == "ubuntu2204/x86_64/"
    assert p["packages"]["fabric_manager"] == ["nvidia-fabricmanager-575", "libnvidia-nscq-575"]
    assert p["packages"]["imex"] == [] and p["modprobe_nvidia"] == []
    assert "nvidia-fabricmanager" in p["services"] and "nvidia-imex" not in p["services"]
    assert p["held"] == ["nvidia-driver-575-open", "nvidia-fabricmanager-575", "libnvidia-nscq-575"]


@pytest.mark.parametrize(("profile", "kwargs", "message"), [
    ("gb200_nvl72_tray", {"architecture": "x86_64"}, r"host t1: .*aarch64 platform but the host reports x86_64"),
    ("gb200_nvl72_tray", {"architecture": "aarch64", "driver_branch": 550}, r"host t1: .*550.* 570 or newer"),
    ("gb200_nvl72_tray", {"architecture": "aarch64", "version": "20.04"}, r"Ubuntu 20.04 .*supported: Ubuntu 22.04"),
    ("gb200_nvl72_tray", {"architecture": "aarch64", "cuda_version": "12.8"}, r"12.8.*valid: 13.0"),
    ("cpu_lab", {"architecture": "x86_64"}, r"'cpu_lab' is not an NVIDIA platform; valid: gb200_nvl72_tray"),
])
def test_bad_platform_input_names_the_host_and_what_is_valid(profile, kwargs, message):
    with pytest.raises(PlanError, match=message):
        nvidia.platform(profile, host="t1", **{**UBUNTU, **kwargs})


def test_architecture_check_can_be_left_to_the_inventory():
    p = nvidia.platform("gb200_nvl72_tray", host="t1", architecture="x86_64", check_architecture=False, **UBUNTU)
    assert p["cuda_repo_arch"] == "sbsa"


def test_driver_branch_check():
    assert nvidia.check_driver("t1", "580.95.05\n580.95.05\n", 580) is None
    wrong = nvidia.check_driver("t1", "575.57.08\n", 580)
    assert wrong.startswith("host t1: driver 575.57.08 is branch 575; expected branch 580")
    assert nvidia.check_driver("t1", "575.57.08\n", 580, strict_branch=False) is None
    assert "at least 570" in nvidia.check_driver("t1", "550.54.15\n", 580, strict_branch=False)
    assert "no GPU" in nvidia.check_driver("t1", "", 580)
    assert "different driver versions" in nvidia.check_driver("t1", "580.1\n575.2\n", 580)


SMI_L = """GPU 0: NVIDIA GB200 (UUID: GPU-0a)
GPU 1: NVIDIA GB200 (UUID: GPU-1b)
GPU 2: NVIDIA GB200 (UUID: GPU-2c)
"""


def test_gpu_count_check_names_host_found_and_declared():
    assert nvidia.check_gpu_count("t1", SMI_L, 3) is None
    message = nvidia.check_gpu_count("t1", SMI_L, 4)
    assert message.startswith("host t1: nvidia-smi sees 3 GPU(s); the inventory declares 4")


IMEX_UP = """Connectivity Table Legend:
Domain State: UP
Nodes:
Node #0   - 10.20.0.11      - READY                - Version: 580.95.05
Node #1   - 10.20.0.12      - READY                - Version: 580.95.05
"""


def test_imex_domain_check():
    assert nvidia.check_imex("t1", IMEX_UP, ["10.20.0.11", "10.20.0.12"]) is None
    assert "not READY: 10.20.0.13" in nvidia.check_imex("t1", IMEX_UP, ["10.20.0.11", "10.20.0.13"])
    down = IMEX_UP.replace("Domain State: UP", "Domain State: DEGRADED")
    assert "IMEX domain is DEGRADED, expected UP" in nvidia.check_imex("t1", down, ["10.20.0.11"])


def test_imex_members_are_identical_on_every_member(gb200_spec):
    plan = build_plan(gb200_spec)
    members = {h: nvidia.imex_members(plan, h) for h in plan["imex_domains"][0]["hosts"]}
    assert {tuple(m) for m in members.values()} == {("10.20.0.11", "10.20.0.12", "10.20.0.13", "10.20.0.14")}
    assert nvidia.imex_members(plan, "cpu-ctl-01") == []


def test_dcgm_counters_cover_what_the_gpu_dashboard_reads():
    csv = nvidia.dcgm_counters(dashboards.DCGM_METRICS)
    fields = [line.split(",")[0] for line in csv.splitlines() if not line.startswith("#")]
    assert fields == list(dashboards.DCGM_METRICS)
