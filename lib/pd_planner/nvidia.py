"""The NVIDIA stack per platform, and the checks of what a node reports.

Pure functions: the `nvidia` role asks `platform()` what a host needs
(repository path, packages, modprobe options, services) and hands the output
of `nvidia-smi` / `nvidia-imex-ctl` to the `check_*` functions, which return
None or a message that names the host and what was expected.

Sources: NVIDIA's CUDA repository layout (`repos/<distro>/<arch>/`, where
Grace is `sbsa`, not the `aarch64` Ansible reports), the GB200 NVL72 notes in
research/ansible-anchors.md (open kernel modules >= R570, IMEX channel 0 by
driver option, no host fabric manager on compute trays), vLLM 0.33's CUDA 13
wheels.
"""

from __future__ import annotations

import re

from . import catalog
from .errors import PlanError

# Ansible's ansible_architecture -> the CUDA repository's directory name.
CUDA_REPO_ARCH = {"x86_64": "x86_64", "aarch64": "sbsa"}
# (distribution, major.minor version) -> the CUDA repository's distro name.
CUDA_REPO_DISTROS = {
    ("Ubuntu", "22.04"): "ubuntu2204",
    ("Ubuntu", "24.04"): "ubuntu2404",
    ("Debian", "12"): "debian12",
}
# Blackwell (B200, GB200) needs R570+ and the open kernel modules.
MIN_DRIVER_BRANCH = 570
# vLLM 0.33's wheels are built against CUDA 13.0.
CUDA_VERSIONS = ("13.0",)


def platform(profile_name: str, *, host: str, architecture: str, distribution: str, version: str,
             driver_branch: int, cuda_version: str, check_architecture: bool = True) -> dict:
    """What a host of this platform needs. Raises PlanError naming the host."""
    profile = catalog.GPU_PROFILES.get(profile_name)
    gpu_profiles = [n for n, p in catalog.GPU_PROFILES.items() if p["device"] == "cuda"]
    if profile is None or profile["device"] != "cuda":
        raise PlanError(f"host {host}: pd_gpu_profile {profile_name!r} is not an NVIDIA platform; "
                        f"valid: {', '.join(gpu_profiles)}")
    if check_architecture and architecture != profile["architecture"]:
        raise PlanError(f"host {host}: pd_gpu_profile {profile_name} is an {profile['architecture']} platform "
                        f"but the host reports {architecture}; fix pd_gpu_profile or the inventory entry")
    distro_key = (distribution, version if distribution != "Debian" else version.split(".")[0])
    repo_distro = CUDA_REPO_DISTROS.get(distro_key)
    if repo_distro is None:
        supported = ", ".join(f"{d} {v}" for d, v in CUDA_REPO_DISTROS)
        raise PlanError(f"host {host}: {distribution} {version} has no CUDA repository here; supported: {supported}")
    if not isinstance(driver_branch, int) or driver_branch < MIN_DRIVER_BRANCH:
        raise PlanError(f"host {host}: nvidia_driver_branch {driver_branch!r} is too old; Blackwell and the open "
                        f"kernel modules need {MIN_DRIVER_BRANCH} or newer (default 580)")
    if cuda_version not in CUDA_VERSIONS:
        raise PlanError(f"host {host}: nvidia_cuda_version {cuda_version!r} does not match vLLM 0.33's wheels; "
                        f"valid: {', '.join(CUDA_VERSIONS)}")
    branch = driver_branch
    repo_arch = CUDA_REPO_ARCH[profile["architecture"]]
    cuda_dash = cuda_version.replace(".", "-")
    packages = {
        "driver": [f"nvidia-driver-{branch}-open"],
        "imex": [f"nvidia-imex-{branch}"] if profile["imex"] else [],
        "fabric_manager": ([f"nvidia-fabricmanager-{branch}", f"libnvidia-nscq-{branch}"]
                           if profile["fabric_manager"] else []),
        "cuda": [f"cuda-toolkit-{cuda_dash}"],
        "dcgm": [f"datacenter-gpu-manager-4-cuda{cuda_version.split('.')[0]}"],
    }
    modprobe = ["options nvidia NVreg_CreateImexChannel0=1"] if profile["imex"] else []
    services = ["nvidia-persistenced"]
    services += ["nvidia-imex"] if profile["imex"] else []
    services += ["nvidia-fabricmanager"] if profile["fabric_manager"] else []
    services += ["nvidia-dcgm", "dcgm-exporter"]
    return {
        "profile": profile_name,
        "description": profile["description"],
        "architecture": profile["architecture"],
        "cuda_repo_arch": repo_arch,
        "cuda_repo_path": f"{repo_distro}/{repo_arch}/",
        "cuda_keyring_path": f"{repo_distro}/{repo_arch}/cuda-keyring_1.1-1_all.deb",
        "driver_branch": branch,
        "cuda_version": cuda_version,
        "gpus": profile["gpus"],
        "imex": profile["imex"],
        "fabric_manager": profile["fabric_manager"],
        "packages": packages,
        # Held so an unattended upgrade never splits driver, IMEX and FM.
        "held": packages["driver"] + packages["imex"] + packages["fabric_manager"],
        "modprobe_nvidia": modprobe,
        "services": services,
    }


def imex_members(plan: dict, host: str) -> list[str]:
    """Addresses of every node of the host's IMEX domain, in plan order: the
    lines of nodes_config.cfg (identical on every member), and the nodes
    check_imex expects READY. Empty when the host is in no domain."""
    for domain in plan["imex_domains"]:
        if host in domain["hosts"]:
            return list(domain["addresses"])
    return []


def check_driver(host: str, smi_csv: str, branch: int, strict_branch: bool = True) -> str | None:
    """`nvidia-smi --query-gpu=driver_version --format=csv,noheader` output."""
    versions = {line.strip() for line in smi_csv.splitlines() if line.strip()}
    if not versions:
        return f"host {host}: nvidia-smi reports no GPU and no driver version (driver not loaded?)"
    if len(versions) > 1:
        return f"host {host}: GPUs report different driver versions {sorted(versions)}"
    version = versions.pop()
    match = re.match(r"(\d+)\.", version)
    if not match:
        return f"host {host}: cannot read the driver version from {version!r}"
    found = int(match.group(1))
    if found < MIN_DRIVER_BRANCH:
        return (f"host {host}: driver {version} is branch {found}; expected branch {branch} "
                f"(at least {MIN_DRIVER_BRANCH} for Blackwell and vLLM 0.33's CUDA 13)")
    if strict_branch and found != branch:
        return (f"host {host}: driver {version} is branch {found}; expected branch {branch} "
                "(nvidia_driver_branch; IMEX and fabric manager must match the driver)")
    return None


def check_gpu_count(host: str, smi_list: str, expected: int) -> str | None:
    """`nvidia-smi -L` output against the GPUs the inventory declares."""
    found = len(re.findall(r"^GPU \d+:", smi_list, flags=re.MULTILINE))
    if found != expected:
        return (f"host {host}: nvidia-smi sees {found} GPU(s); the inventory declares {expected} "
                "(pd_gpus or the pd_gpu_profile's count): a GPU is missing or the inventory is wrong")
    return None


def check_imex(host: str, status: str, members: list[str]) -> str | None:
    """`nvidia-imex-ctl -N` output: the domain is up and every member is ready."""
    if not re.search(r"Domain State:\s*UP", status):
        state = re.search(r"Domain State:\s*(\S+)", status)
        return (f"host {host}: IMEX domain is {state.group(1) if state else 'unknown'}, expected UP; "
                "check nvidia-imex on every node of /etc/nvidia-imex/nodes_config.cfg")
    ready = set()
    for line in status.splitlines():
        match = re.match(r"\s*\*?\s*Node #\d+\s+-\s+(\S+)\s+-\s+(\w+)", line)
        if match and match.group(2).upper() == "READY":
            ready.add(match.group(1))
    missing = [m for m in members if m not in ready]
    if missing:
        return f"host {host}: IMEX nodes not READY: {', '.join(missing)}"
    return None


def dcgm_counters(metrics: tuple[str, ...]) -> str:
    """dcgm-exporter's counters CSV: exactly the fields the dashboards read."""
    kinds = {"DCGM_FI_DEV_XID_ERRORS": "gauge", "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL": "counter"}
    lines = ["# DCGM field, Prometheus type, help (generated: the fields the PD dashboards read)"]
    lines += [f"{m}, {kinds.get(m, 'gauge')}, {m.lower().removeprefix('dcgm_fi_')}." for m in metrics]
    return "\n".join(lines) + "\n"
