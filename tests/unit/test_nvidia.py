"""The NVIDIA stack per platform and the post-install checks (pure functions
the nvidia role calls with what nvidia-smi and nvidia-imex-ctl print)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pd_planner import PlanError, build_plan, dashboards, nvidia

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
    # The rack as pd_imex_domains declares it: 18 trays, 4 of them serving.
    assert {tuple(m) for m in members.values()} == {tuple(f"10.20.0.{n}" for n in range(11, 29))}
    assert nvidia.imex_members(plan, "cpu-ctl-01") == []


def test_dcgm_counters_cover_what_the_gpu_dashboard_reads():
    csv = nvidia.dcgm_counters(dashboards.DCGM_METRICS)
    fields = [line.split(",")[0] for line in csv.splitlines() if not line.startswith("#")]
    assert fields == list(dashboards.DCGM_METRICS)


# What one real H200 printed (driver 580.159.04, passed through to a VM):
# tests/fixtures/nvidia/README.md says where each file came from.
REAL = Path(__file__).resolve().parents[1] / "fixtures" / "nvidia" / "h200-passthrough-580.159.04"


def real(name: str) -> str:
    return (REAL / f"{name}.out").read_text()


def real_rc(name: str) -> int:
    return int((REAL / f"{name}.rc").read_text())


def real_report() -> dict:
    """The report checks.yml builds, from the real H200's outputs."""
    missing = [line.split(":")[0] for line in real("tools").splitlines() if line.endswith(": missing")]
    return {"missing": [t for t in missing if t in nvidia.CHECK_TOOLS],
            "versions": real("smi-driver-version"), "gpus": real("smi-L"),
            "nvlink_rc": real_rc("smi-nvlink-status"), "nvlink": real("smi-nvlink-status"),
            "fabric": real("smi-query-fabric"), "fabric_manager_state": "", "imex_rc": 0, "imex": ""}


def verdicts(report: dict, **kw) -> dict:
    args = {"gpus": 1, "branch": 580, "strict_branch": True, "imex": False, "fabric_manager": True,
            "imex_members": [], **kw}
    return {v["check"]: (v["status"], v["message"]) for v in nvidia.judge("gpu-0", report, **args)}


def test_real_h200_driver_and_gpu_count():
    assert real("smi-query-gpus") == "0, NVIDIA H200, 580.159.04, 143771 MiB\n"
    assert nvidia.check_driver("gpu-0", real("smi-driver-version"), 580) is None
    assert "driver 580.159.04 is branch 580; expected branch 575" in nvidia.check_driver(
        "gpu-0", real("smi-driver-version"), 575)
    assert nvidia.check_gpu_count("gpu-0", real("smi-L"), 1) is None
    assert nvidia.check_gpu_count("gpu-0", real("smi-L"), 8).startswith(
        "host gpu-0: nvidia-smi sees 1 GPU(s); the inventory declares 8")
    # preflight counts the lines of --query-gpu=index
    assert real("smi-index").splitlines() == ["0"]


def test_real_single_h200_prints_no_nvlink_and_is_skipped_with_its_reason():
    # nvidia-smi nvlink --status (and -s) on one passed-through H200: nothing, exit 0.
    assert real("smi-nvlink-status") == "" and real_rc("smi-nvlink-status") == 0
    assert real("smi-nvlink-s") == "" and real_rc("smi-nvlink-s") == 0
    assert nvidia.nvlink_links(real("smi-nvlink-status")) == {}
    status, message = verdicts(real_report())["nvlink"]
    assert status == "skip" and "one GPU (pd_gpus 1)" in message
    # The same silence from a host declared with 8 GPUs is a failure.
    status, message = verdicts(real_report(), gpus=8)["nvlink"]
    assert status == "fail" and "lists no NVLink for its 8 GPU(s)" in message


def test_real_h200_judged_as_the_real_run_reported():
    """The verdicts computed from the captured outputs are the ones
    playbooks/check.yml printed on that machine (check-run/check-1.log)."""
    judged = verdicts(real_report())
    assert {c: s for c, (s, _) in judged.items()} == {
        "driver": "ok", "gpu count": "ok", "nvlink": "skip", "fabric": "skip", "imex": "skip"}
    log = (REAL / "check-run" / "check-1.log").read_text()
    for check, (status, message) in judged.items():
        assert f"{status} {check}: {message}" in log


def _links(gpus: int, links: int = 18, speed: str = "26.562 GB/s") -> str:
    """The multi-GPU layout of nvidia-smi nvlink --status (not captured here:
    one GPU only; see tests/fixtures/nvidia/README.md)."""
    return "".join(f"GPU {g}: NVIDIA H200 (UUID: GPU-{g:08x})\n"
                   + "".join(f"\t Link {k}: {speed}\n" for k in range(links)) for g in range(gpus))


def test_nvlink_judged_per_gpu_and_link():
    healthy = _links(8)
    assert len(nvidia.nvlink_links(healthy)) == 8 and nvidia.check_nvlink("h1", healthy, 8) is None
    down = healthy.replace("GPU 3: NVIDIA H200 (UUID: GPU-00000003)\n\t Link 0: 26.562 GB/s",
                           "GPU 3: NVIDIA H200 (UUID: GPU-00000003)\n\t Link 0: <inactive>")
    assert nvidia.check_nvlink("h1", down, 8) == "host h1: NVLink not up: GPU 3 link 0 (<inactive>)"
    assert nvidia.check_nvlink("h1", _links(7), 8) == "host h1: NVLink not up: GPU 7 lists no link"
    # Any non-empty text used to pass.
    assert "lists no NVLink" in nvidia.check_nvlink("h1", "NVML: Unable to retrieve NVLink information\n", 8)


def test_fabric_registration_on_nvswitch_boards():
    # The real H200 reads N/A: no NVSwitch fabric behind it.
    assert real("smi-query-fabric") == "0, N/A, N/A\n" and nvidia.fabric_absent(real("smi-query-fabric"))
    assert "GPU 0 N/A, N/A (expected Completed, Success" in nvidia.check_fabric("gpu-0", real("smi-query-fabric"))
    done = "".join(f"{g}, Completed, Success\n" for g in range(8))
    assert nvidia.check_fabric("h1", done) is None and not nvidia.fabric_absent(done)
    waiting = done.replace("5, Completed, Success", "5, In Progress, N/A")
    assert "GPU 5 In Progress, N/A" in nvidia.check_fabric("h1", waiting)
    board = {**real_report(), "missing": [], "fabric": done, "nvlink": _links(8), "gpus": "".join(
        f"GPU {g}: NVIDIA H200 (UUID: GPU-{g})\n" for g in range(8)), "versions": "580.159.04\n" * 8}
    assert verdicts({**board, "fabric_manager_state": "active"}, gpus=8)["fabric manager"][0] == "ok"
    status, message = verdicts({**board, "fabric_manager_state": "failed"}, gpus=8)["fabric manager"]
    assert status == "fail" and message == "host gpu-0: nvidia-fabricmanager is failed, expected active"
    # No systemd (the real H200): named, not judged.
    status, message = verdicts({**board, "missing": ["systemctl"]}, gpus=8)["fabric manager"]
    assert status == "fail" and "systemctl is not installed (from systemd)" in message


# nvidia-imex-ctl -N as NVIDIA's IMEX guide describes it (legend, nodes,
# connection table, domain state); not captured here (no GB200).
IMEX_TWO = """Connectivity Table Legend:
I - Invalid - Node wasn't reachable, no connection status available
N - Never Connected
R - Recovering - Connection was lost, but clean up has not yet been triggered.
D - Disconnected - Connection was lost, and clean up has been triggreed.
A - Authenticating - If GSSAPI enabled, client has initiated mutual authentication.
C - Connected - Ready for operation

12/4/2026 10:39:43.659
Nodes:
Node #0   - 10.20.0.11      - READY                - Version: 580.159.04
Node #1   - 10.20.0.12      - READY                - Version: 580.159.04

 Nodes From\\To  0   1
       0        C   C
       1        C   C
Domain State: UP
"""


def test_imex_connection_table():
    members = ["10.20.0.11", "10.20.0.12"]
    assert nvidia.check_imex("t1", IMEX_TWO, members) is None
    cut = IMEX_TWO.replace("       1        C   C", "       1        D   C")
    assert nvidia.check_imex("t1", cut, members) == (
        "host t1: IMEX connections not C (connected): 10.20.0.12 to 10.20.0.11 (D)")


def test_missing_imex_tool_is_named():
    # The real H200 has no nvidia-imex-ctl (exit 127); on an IMEX platform that is named.
    assert real_rc("imex-ctl-N") == 127
    status, message = verdicts({**real_report(), "missing": ["nvidia-imex-ctl"]}, imex=True,
                               fabric_manager=False, imex_members=["10.20.0.11"])["imex"]
    assert status == "fail" and message.startswith("host gpu-0: nvidia-imex-ctl is not installed (from nvidia-imex")


def test_missing_nvidia_smi_is_named_for_every_check_that_reads_it():
    judged = verdicts({"missing": ["nvidia-smi"]}, gpus=8)
    for check in ("driver", "gpu count", "nvlink", "fabric"):
        status, message = judged[check]
        assert status == "fail" and "nvidia-smi is not installed (from the NVIDIA driver (nvidia stage))" in message


def test_nvlink_command_failure_is_reported_with_its_exit_status():
    status, message = verdicts({**real_report(), "missing": [], "nvlink_rc": 255, "nvlink": ""}, gpus=8)["nvlink"]
    assert status == "fail" and message == "host gpu-0: nvidia-smi nvlink --status failed (rc 255)"
