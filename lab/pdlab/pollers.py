"""NIXL polling threads on a small CPU share while the lab converges."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from pathlib import Path

from .shell import podman, step

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


def remove_poller_cgroup() -> None:
    """Remove the cgroup once no thread is left in it (the nodes are gone)."""
    if POLLER_CGROUP.is_dir() and not (POLLER_CGROUP / "tasks").read_text().strip():
        POLLER_CGROUP.rmdir()
