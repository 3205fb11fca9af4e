"""The lab network and its nodes: podman containers with systemd as PID 1."""

from __future__ import annotations

import time

from .image import MODEL_SRC, WHEELHOUSE, ensure_image
from .inventory import Lab, Node
from .shell import LABEL, STATE, podman, step

NETWORK = "pd-lab"
# Shared by every node at /models, as a shared filesystem would be.
SHARED = STATE / "shared"


def ensure_network(lab: Lab) -> None:
    if podman("network", "exists", NETWORK, check=False).returncode != 0:
        step(f"creating network {NETWORK} ({lab.subnet})")
        podman("network", "create", "--subnet", str(lab.subnet), "--gateway", lab.gateway, "--label", LABEL,
               NETWORK)


def running_nodes() -> list[str]:
    out = podman("ps", "-a", "--filter", f"label={LABEL}", "--format", "{{.Names}}").stdout
    return sorted(line for line in out.splitlines() if line)


def start_node(image: str, node: Node) -> None:
    for path in (SHARED, WHEELHOUSE, MODEL_SRC):
        path.mkdir(parents=True, exist_ok=True)
    # SYS_ADMIN lets systemd in the node build the units' sandboxes
    # (ProtectSystem, PrivateTmp) as on a real host; without it systemd
    # silently skips them and the hardening would go untested. The runtime
    # and the rlimits come from lab/containers.conf (CONTAINERS_CONF).
    args = ["run", "-d", "--name", node.name, "--hostname", node.name, "--label", LABEL,
            "--network", NETWORK, "--ip", node.address, "--systemd", "always", "--cap-add", "SYS_ADMIN",
            "--tmpfs", "/tmp:rw,exec", "--shm-size", "1g",
            "-v", f"{SHARED}:/models", "-v", f"{WHEELHOUSE}:/srv/wheelhouse:ro",
            "-v", f"{MODEL_SRC}:/srv/model-src:ro"]
    # No container cpuset: vLLM's CPU NIXL worker binds its KV thread to the
    # last core of the NUMA node (read from /sys, which shows every core) and
    # fails with EINVAL outside a cpuset. Compute threads are pinned per
    # instance by VLLM_CPU_OMP_THREADS_BIND (pd_cpu_cores) instead.
    for port in node.published:
        args += ["-p", f"127.0.0.1:{port}:{port}"]
    podman(*args, image, "/sbin/init")


def wait_systemd(name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = podman("exec", name, "systemctl", "is-system-running", check=False).stdout.strip()
        if state in ("running", "degraded"):
            return
        time.sleep(1)
    raise SystemExit(f"node {name}: systemd did not come up ({state!r} after {timeout:.0f} s)")


def converge_nodes(lab: Lab, prefill: int, decode: int) -> list[str]:
    """Start the wanted nodes; return the existing ones the shape drops
    (removed only after site.yml has drained them)."""
    image = ensure_image()
    ensure_network(lab)
    wanted = lab.hosts(prefill, decode)
    retiring = [name for name in running_nodes() if name not in wanted]
    for node in wanted.values():
        if podman("container", "exists", node.name, check=False).returncode == 0:
            if podman("inspect", "-f", "{{.State.Running}}", node.name).stdout.strip() != "true":
                podman("start", node.name)
            continue
        step(f"starting node {node.name} ({node.group}, {node.address}"
             f"{', core ' + str(node.cores[0]) if node.cores else ''})")
        start_node(image, node)
    for name in wanted:
        wait_systemd(name)
    step(f"nodes up: {', '.join(wanted)}" + (f"; retiring: {', '.join(retiring)}" if retiring else ""))
    return retiring


def remove_nodes(names: list[str], grace: int = 30) -> None:
    for name in names:
        step(f"removing node {name}")
        podman("rm", "-f", "-t", str(grace), name)


def remove_network() -> None:
    if podman("network", "exists", NETWORK, check=False).returncode == 0:
        removed = podman("network", "rm", NETWORK, check=False)
        if removed.returncode:
            raise SystemExit(f"could not remove network {NETWORK}: {removed.stderr.strip()}")
