#!/usr/bin/env python3
"""Fault injection against the running lab (`make lab`): kill -9 each kind of
worker, and restart the router, under a steady request loop through the
router; print failed requests and recovery times.

    .venv/bin/python tools/fault_inject.py [--faults prefill,decode,router] [--out FILE.json]

Lab only: it acts on the podman nodes labelled as the lab's and sends
requests to the router's port published on 127.0.0.1 and to addresses inside
the lab network; anything else is refused. Bounded: one request about every
--interval seconds (max_tokens 8), each fault waits at most --timeout
seconds for recovery.

For each fault, seconds after the kill:
  restarted  systemd started a new main process
  health     the instance's /health answered 200 (from this machine)
  active     the unit is active: its start gate (health + warm-up) passed
  routed     the router counts the worker healthy again (its health gauge),
             or with router discovery its announcer announces it again
and the requests that failed from the kill until the worker is routed again
(plus --settle seconds).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lab"))

from pdlab import inventory, pollers  # noqa: E402  (the lab's own inventory reader and NIXL poller share)
from pdlab.shell import LABEL  # noqa: E402


def podman(*args: str, check: bool = True) -> str:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise SystemExit(f"podman {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def node_exec(node: str, *argv: str, check: bool = True) -> str:
    return podman("exec", node, *argv, check=check)


@dataclass
class Worker:
    node: str
    unit: str
    pool: str
    instance: str
    url: str


@dataclass
class Outcome:
    fault: str
    target: str
    times: dict = field(default_factory=dict)
    failed: int = 0
    sent: int = 0
    errors: list = field(default_factory=list)


class RequestLoop(threading.Thread):
    """One completion through the router about every `interval` seconds."""

    def __init__(self, url: str, model: str, interval: float):
        super().__init__(daemon=True)
        self.url, self.model, self.interval = url, model, interval
        self.results: list[tuple[float, bool, str]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        body = json.dumps({"model": self.model, "prompt": "The capital of France is", "max_tokens": 8}).encode()
        while not self.stopping.is_set():
            started = time.monotonic()
            request = urllib.request.Request(f"{self.url}/v1/completions", data=body,
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=60) as answer:
                    ok, detail = answer.status == 200 and bool(json.loads(answer.read()).get("choices")), ""
            except urllib.error.HTTPError as exc:
                ok, detail = False, f"HTTP {exc.code}"
            except (OSError, ValueError) as exc:
                ok, detail = False, type(exc).__name__
            self.results.append((started, ok, detail))
            self.stopping.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def between(self, start: float, end: float) -> list[tuple[float, bool, str]]:
        return [r for r in self.results if start <= r[0] <= end]


def lab_nodes() -> list[str]:
    out = podman("ps", "--filter", f"label={LABEL}", "--format", "{{.Names}}")
    return sorted(line for line in out.splitlines() if line)


def lab_workers(nodes: list[str]) -> list[Worker]:
    workers = []
    for node in nodes:
        listing = node_exec(node, "sh", "-c", "ls /etc/vllm/vllm-*.json 2>/dev/null || true")
        for path in listing.split():
            record = json.loads(node_exec(node, "cat", path))
            workers.append(Worker(node, record["unit"], record["pool"], record["instance"], record["url"]))
    return workers


def require_lab_address(url: str, subnet: ipaddress.IPv4Network) -> None:
    host = re.match(r"https?://\[?([^\]/:]+)", url).group(1)
    address = ipaddress.ip_address(host)
    if not (address.is_loopback or address in subnet):
        raise SystemExit(f"refusing {url}: only loopback and the lab network {subnet} are targeted")


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status == 200
    except (OSError, ValueError):
        return False


def router_health(metrics_url: str) -> dict[str, float]:
    try:
        with urllib.request.urlopen(metrics_url, timeout=2) as answer:
            text = answer.read().decode()
    except OSError:
        return {}
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r'^vllm_router_worker_health\{[^}]*worker="([^"]+)"[^}]*\} (\S+)', text, re.M)}


def worker_gauge(health: dict[str, float], url: str) -> float | None:
    """The router's health gauge for one instance: its bare URL, or every
    rank-pinned URL of a data-parallel instance (`url@0`, `url@1`, ...: the
    router registers one worker per rank). The lowest value counts, so the
    instance is routed again only when every rank is; None when absent."""
    values = [value for worker, value in health.items()
              if worker == url or re.fullmatch(re.escape(url) + r"@\d+", worker)]
    return min(values) if values else None


def announcing(worker: Worker) -> bool | None:
    """Router discovery (the default): whether the instance's announcer
    announces it now (its record), None without an announcer. The router
    adds an announced instance at its next message and drops one about 5 s
    after the last."""
    out = node_exec(worker.node, "cat", f"/run/pd-announce/{worker.unit}-announce/state.json", check=False)
    try:
        return bool(json.loads(out)["announcing"])
    except (ValueError, KeyError, TypeError):
        return None


def unit_state(node: str, unit: str) -> tuple[int, str]:
    out = node_exec(node, "systemctl", "show", "--property=MainPID,ActiveState", f"{unit}.service", check=False)
    values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return int(values.get("MainPID") or 0), values.get("ActiveState", "")


def wait_steady(loop: RequestLoop, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recent = loop.results[-count:]
        if len(recent) == count and all(ok for _, ok, _ in recent):
            return
        time.sleep(0.5)
    raise SystemExit(f"the lab does not serve steadily ({count} requests in a row) after {timeout:.0f} s")


def kill_worker(worker: Worker, loop: RequestLoop, metrics_url: str, timeout: float, settle: float) -> Outcome:
    outcome = Outcome(f"kill -9 {worker.pool}", f"{worker.instance} ({worker.unit} on {worker.node})")
    old_pid, _ = unit_state(worker.node, worker.unit)
    if old_pid <= 0:
        raise SystemExit(f"{worker.unit} on {worker.node} has no main process")
    t0 = time.monotonic()
    node_exec(worker.node, "kill", "-9", str(old_pid))
    seen_down = False
    while time.monotonic() - t0 < timeout:
        elapsed = round(time.monotonic() - t0, 1)
        pid, state = unit_state(worker.node, worker.unit)
        if "restarted" not in outcome.times and pid > 0 and pid != old_pid:
            outcome.times["restarted"] = elapsed
        if "restarted" in outcome.times and "health" not in outcome.times and http_ok(f"{worker.url}/health"):
            outcome.times["health"] = elapsed
        if "restarted" in outcome.times and "active" not in outcome.times and state == "active":
            outcome.times["active"] = elapsed
        announced = announcing(worker)
        if announced is not None:
            # Discovery: out of the router once no longer announced, back
            # once announced again after the new process became active.
            seen_down = seen_down or not announced
            if "active" in outcome.times and announced and seen_down:
                outcome.times["routed"] = elapsed
                outcome.times["router_ejected"] = True
                break
            time.sleep(0.5)
            continue
        gauge = worker_gauge(router_health(metrics_url), worker.url)
        if gauge == 0:
            seen_down = True
        # Back in the router: its health gauge is 1 again after the new
        # process became active (a router that never noticed the death
        # counts from then).
        if "active" in outcome.times and gauge == 1:
            outcome.times["routed"] = elapsed
            outcome.times["router_ejected"] = seen_down
            break
        # A router without that gauge: the first request served after the
        # unit became active.
        if gauge is None and "active" in outcome.times and any(
                ok for _, ok, _ in loop.between(t0 + outcome.times["active"], time.monotonic())):
            outcome.times["routed"] = elapsed
            break
        time.sleep(0.5)
    else:
        outcome.errors.append(f"not recovered within {timeout:.0f} s")
    return _count_requests(outcome, loop, t0, settle)


def _count_requests(outcome: Outcome, loop: RequestLoop, t0: float, settle: float) -> Outcome:
    """After `settle` seconds more, the requests sent since `t0`: how many, how many failed, why."""
    time.sleep(settle)
    window = loop.between(t0, time.monotonic())
    outcome.sent, outcome.failed = len(window), sum(1 for _, ok, _ in window if not ok)
    outcome.errors += sorted({d for _, ok, d in window if not ok and d})
    return outcome


def restart_router(ctl: str, loop: RequestLoop, timeout: float, settle: float) -> Outcome:
    outcome = Outcome("restart router", f"vllm-router on {ctl}")
    t0 = time.monotonic()
    node_exec(ctl, "systemctl", "restart", "--no-block", "vllm-router.service")
    time.sleep(1)
    while time.monotonic() - t0 < timeout:
        recent = loop.results[-1:] if loop.results else []
        if recent and recent[0][0] > t0 + 1 and recent[0][1]:
            outcome.times["serving"] = round(recent[0][0] - t0, 1)
            break
        time.sleep(0.5)
    else:
        outcome.errors.append(f"not serving within {timeout:.0f} s")
    return _count_requests(outcome, loop, t0, settle)


def main(argv: list[str]) -> int:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--faults", default="prefill,decode,router",
                     help="comma-separated: prefill, decode (kill -9 the first instance of that pool), router")
    cli.add_argument("--interval", type=float, default=1.0, help="seconds between requests (at least 0.2)")
    cli.add_argument("--timeout", type=float, default=300, help="longest wait for one recovery, seconds")
    cli.add_argument("--settle", type=float, default=5, help="requests still counted after a recovery, seconds")
    cli.add_argument("--out", type=Path, help="write the outcomes as JSON here too")
    cli.add_argument("--pollers-low", action="store_true",
                     help="keep every NIXL polling thread on the lab's small CPU share for the run (a restarting "
                          "worker then competes with no spinning poller, as on a many-core GPU host)")
    cli.add_argument("--list", action="store_true",
                     help="only show the instances, their units' state and the router's view; send and kill nothing")
    opts = cli.parse_args(argv)
    faults = [f.strip() for f in opts.faults.split(",") if f.strip()]
    unknown = sorted(set(faults) - {"prefill", "decode", "router"})
    if unknown or not faults:
        cli.error(f"--faults: unknown {unknown}; valid: prefill, decode, router")
    if not 0.2 <= opts.interval <= 10 or not 10 <= opts.timeout <= 1800:
        cli.error("--interval must be 0.2-10 s and --timeout 10-1800 s")

    lab = inventory.load()
    nodes = lab_nodes()
    if lab.ctl.name not in nodes:
        raise SystemExit("no lab is running (make lab)")
    router_url = f"http://127.0.0.1:{lab.router_port}"
    targets = json.loads(node_exec(lab.ctl.name, "cat", "/etc/prometheus/file_sd/vllm-router.json"))
    metrics_url = f"http://{targets[0]['targets'][0]}/metrics"
    workers = lab_workers([n for n in nodes if n != lab.ctl.name])
    for url in [router_url, metrics_url, *(w.url for w in workers)]:
        require_lab_address(url, lab.subnet)
    print(f"lab: {len(workers)} instances ({', '.join(w.instance for w in workers)}); router {router_url}")
    if opts.list:
        health = router_health(metrics_url)
        for w in workers:
            pid, state = unit_state(w.node, w.unit)
            gauge = worker_gauge(health, w.url)
            print(f"  {w.instance:<12} {w.unit} on {w.node}: {state}, main pid {pid}; {w.url}/health "
                  f"{'200' if http_ok(w.url + '/health') else 'not answering'}; router health gauge "
                  f"{'absent' if gauge is None else gauge}")
        return 0

    vllm_nodes = [n for n in nodes if n != lab.ctl.name]
    low_pollers = contextlib.ExitStack()
    if opts.pollers_low:
        # Restarted workers' new pollers are moved within 5 s; the normal
        # share comes back when the run ends (callbacks run last-in first).
        pollers.deprioritize_nixl_pollers(vllm_nodes)
        low_pollers.callback(pollers.serve_with_nixl_pollers)
        low_pollers.enter_context(pollers.PollerWatch(vllm_nodes, every=5))
    loop = RequestLoop(router_url, lab.model, opts.interval)
    loop.start()
    outcomes = []
    try:
        for fault in faults:
            wait_steady(loop, 5, opts.timeout)
            if fault == "router":
                outcome = restart_router(lab.ctl.name, loop, opts.timeout, opts.settle)
            else:
                pool = [w for w in workers if w.pool == fault]
                if not pool:
                    raise SystemExit(f"the lab has no {fault} instance")
                outcome = kill_worker(pool[0], loop, metrics_url, opts.timeout, opts.settle)
            outcomes.append(outcome)
            print(f"{outcome.fault:<20} {outcome.target:<45} failed {outcome.failed}/{outcome.sent}  "
                  + "  ".join(f"{k} {v}" + ("" if isinstance(v, bool) else " s") for k, v in outcome.times.items())
                  + (f"  errors: {', '.join(outcome.errors)}" if outcome.errors else ""), flush=True)
    finally:
        loop.stopping.set()
        loop.join(timeout=70)
        low_pollers.close()
    if opts.out:
        opts.out.write_text(json.dumps([o.__dict__ for o in outcomes], indent=2) + "\n")
    return 0 if all("not recovered" not in " ".join(o.errors) and "not serving" not in " ".join(o.errors)
                    for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
