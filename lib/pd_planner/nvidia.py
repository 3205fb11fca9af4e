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
    """`nvidia-imex-ctl -N` output (NVIDIA's IMEX guide): the domain is UP,
    every member READY, and the connectivity table (rows and columns are the
    node numbers) has C (connected) between every pair of members."""
    if not re.search(r"Domain State:\s*UP", status):
        state = re.search(r"Domain State:\s*(\S+)", status)
        return (f"host {host}: IMEX domain is {state.group(1) if state else 'unknown'}, expected UP; "
                "check nvidia-imex on every node of /etc/nvidia-imex/nodes_config.cfg")
    ready, numbers = set(), {}
    for line in status.splitlines():
        match = re.match(r"\s*\*?\s*Node #(\d+)\s+-\s+(\S+)\s+-\s+(\w+)", line)
        if match:
            numbers[match.group(1)] = match.group(2)
            if match.group(3).upper() == "READY":
                ready.add(match.group(2))
    missing = [m for m in members if m not in ready]
    if missing:
        return f"host {host}: IMEX nodes not READY: {', '.join(missing)}"
    links = _imex_links(status, numbers)
    broken = sorted({f"{a} to {b} ({state})" for (a, b), state in links.items()
                     if a in members and b in members and state != "C"})
    if broken:
        return f"host {host}: IMEX connections not C (connected): {', '.join(broken)}"
    return None


def _imex_links(status: str, numbers: dict[str, str]) -> dict[tuple[str, str], str]:
    """The `Nodes From\\To` table of `nvidia-imex-ctl -N`: (from, to) address -> state letter."""
    lines = status.splitlines()
    header = next((i for i, line in enumerate(lines) if "From\\To" in line), None)
    if header is None:
        return {}
    columns = lines[header].split("From\\To", 1)[1].split()
    links = {}
    for line in lines[header + 1:]:
        cells = line.split()
        if len(cells) != len(columns) + 1 or not cells[0].isdigit():
            break
        for column, state in zip(columns, cells[1:], strict=True):
            if cells[0] in numbers and column in numbers:
                links[(numbers[cells[0]], numbers[column])] = state
    return links


# `nvidia-smi nvlink --status`: a "GPU N: <name> (UUID: ...)" line, then one
# "\t Link K: 26.562 GB/s" (or "<inactive>") line per link. A GPU without
# NVLink (a single passed-through H200) prints nothing at all, exit 0.
_NVLINK_GPU = re.compile(r"^GPU (\d+):")
_NVLINK_LINK = re.compile(r"^\s+Link (\d+):\s*(.*?)\s*$")
_NVLINK_UP = re.compile(r"^\d+(\.\d+)? GB/s$")


def nvlink_links(status: str) -> dict[int, dict[int, str]]:
    """GPU index -> {link number: what nvidia-smi printed for it}."""
    gpus: dict[int, dict[int, str]] = {}
    current = None
    for line in status.splitlines():
        gpu = _NVLINK_GPU.match(line)
        if gpu:
            current = gpus.setdefault(int(gpu.group(1)), {})
            continue
        link = _NVLINK_LINK.match(line)
        if link and current is not None:
            current[int(link.group(1))] = link.group(2)
    return gpus


def check_nvlink(host: str, status: str, expected: int) -> str | None:
    """Every GPU 0..expected-1 lists its NVLinks and every link reports a
    speed: a link printed as <inactive> (or anything but "N GB/s") fails."""
    gpus = nvlink_links(status)
    if not gpus:
        return (f"host {host}: nvidia-smi nvlink --status lists no NVLink for its {expected} GPU(s): "
                "NVLink is down or absent (a board without NVLink cannot serve this pd_gpu_profile)")
    problems = []
    for index in range(expected):
        links = gpus.get(index)
        if not links:
            problems.append(f"GPU {index} lists no link")
            continue
        down = [f"{k} ({v or 'empty'})" for k, v in sorted(links.items()) if not _NVLINK_UP.match(v)]
        if down:
            problems.append(f"GPU {index} link {', '.join(down)}")
    if problems:
        return f"host {host}: NVLink not up: {'; '.join(problems)}"
    return None


def check_fabric(host: str, query_csv: str) -> str | None:
    """`nvidia-smi --query-gpu=index,fabric.state,fabric.status --format=csv,noheader`:
    on an NVSwitch board every GPU is registered with the fabric (Completed,
    Success) once the fabric manager has configured it; CUDA waits until then."""
    rows = [[c.strip() for c in line.split(",")] for line in query_csv.splitlines() if line.strip()]
    if not rows:
        return f"host {host}: nvidia-smi reports no fabric state"
    bad = [f"GPU {r[0]} {', '.join(r[1:])}" for r in rows if r[1:] != ["Completed", "Success"]]
    if bad:
        return (f"host {host}: GPUs not registered with the NVSwitch fabric: {'; '.join(bad)} "
                "(expected Completed, Success; is nvidia-fabricmanager running?)")
    return None


def fabric_absent(query_csv: str) -> bool:
    """True when every GPU reports fabric state N/A: the GPU is on no NVSwitch
    fabric (a single passed-through H200 reads "0, N/A, N/A")."""
    rows = [[c.strip() for c in line.split(",")] for line in query_csv.splitlines() if line.strip()]
    return bool(rows) and all(r[1:2] == ["N/A"] for r in rows)


# The commands each check reads, and what installs them: a missing one is
# named instead of judged.
CHECK_TOOLS = {
    "nvidia-smi": "the NVIDIA driver (nvidia stage)",
    "nvidia-imex-ctl": "nvidia-imex (nvidia stage, IMEX platforms)",
    "systemctl": "systemd",
}


def judge(host: str, report: dict, *, gpus: int, branch: int, strict_branch: bool, imex: bool,
          fabric_manager: bool, imex_members: list[str]) -> list[dict]:
    """Every post-install check of a GPU node, on what it printed (`report`:
    missing tools, and stdout or rc of each command). One verdict per check:
    {check, status: ok | fail | skip, message}; skip says why."""
    missing = set(report.get("missing") or [])
    verdicts = []

    def verdict(check, problem, ok_message, needs=()):
        """problem: a callable returning None or the failure, called only
        when every command it reads (`needs`) is installed."""
        absent = [t for t in needs if t in missing]
        found = None if absent else problem()
        if absent:
            status, message = "fail", (f"host {host}: {absent[0]} is not installed (from "
                                       f"{CHECK_TOOLS.get(absent[0], absent[0])}); cannot check {check}")
        elif found:
            status, message = "fail", found
        else:
            status, message = "ok", ok_message
        verdicts.append({"check": check, "status": status, "message": message})

    def skip(check, reason):
        verdicts.append({"check": check, "status": "skip", "message": f"host {host}: {reason}"})

    smi = ("nvidia-smi",)
    versions = {v.strip() for v in str(report.get("versions", "")).splitlines() if v.strip()}
    verdict("driver", lambda: check_driver(host, report.get("versions", ""), branch, strict_branch),
            f"host {host}: driver {', '.join(sorted(versions))} (branch {branch})", smi)
    verdict("gpu count", lambda: check_gpu_count(host, report.get("gpus", ""), gpus),
            f"host {host}: {gpus} GPU(s), as the inventory declares", smi)
    nvlink_rc = int(report.get("nvlink_rc", 0) or 0)
    if gpus == 1:
        skip("nvlink", "one GPU (pd_gpus 1): no GPU peer to reach over NVLink")
    else:
        verdict("nvlink", lambda: (f"host {host}: nvidia-smi nvlink --status failed (rc {nvlink_rc})" if nvlink_rc
                                   else check_nvlink(host, report.get("nvlink", ""), gpus)),
                f"host {host}: every link of GPUs 0-{gpus - 1} up", smi)
    fabric = str(report.get("fabric", ""))
    if not fabric_manager:
        skip("fabric", "no fabric manager on this platform's hosts (HGX boards run one; GB200 trays do not)")
    elif gpus == 1 and fabric_absent(fabric):
        skip("fabric", "one GPU on no NVSwitch fabric (fabric state N/A): the fabric manager has nothing to do")
    else:
        verdict("fabric", lambda: check_fabric(host, fabric),
                f"host {host}: every GPU registered with the NVSwitch fabric", smi)
        service = str(report.get("fabric_manager_state", "")).strip()
        why = " ".join(str(report.get("fabric_manager_error", "")).split())
        verdict("fabric manager", lambda: None if service == "active" else (
                    f"host {host}: nvidia-fabricmanager is {service or 'unknown'}, expected active"
                    + (f" (systemctl: {why})" if why else "")),
                f"host {host}: nvidia-fabricmanager active", ("systemctl",))
    if not imex:
        skip("imex", "not an IMEX (GB200) platform")
    else:
        imex_rc = int(report.get("imex_rc", 0) or 0)
        def imex_problem():
            problem = check_imex(host, report.get("imex", ""), imex_members)
            return f"{problem} (nvidia-imex-ctl -N exited {imex_rc})" if problem and imex_rc else problem

        verdict("imex", imex_problem,
                f"host {host}: IMEX domain UP, {len(imex_members)} node(s) READY and connected", ("nvidia-imex-ctl",))
    return verdicts


def dcgm_counters(metrics: tuple[str, ...]) -> str:
    """dcgm-exporter's counters CSV: exactly the fields the dashboards read."""
    kinds = {"DCGM_FI_DEV_XID_ERRORS": "gauge", "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL": "counter"}
    lines = ["# DCGM field, Prometheus type, help (generated: the fields the PD dashboards read)"]
    lines += [f"{m}, {kinds.get(m, 'gauge')}, {m.lower().removeprefix('dcgm_fi_')}." for m in metrics]
    return "\n".join(lines) + "\n"
