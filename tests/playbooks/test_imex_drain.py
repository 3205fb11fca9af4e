"""The drain before an IMEX restart (roles/nvidia/tasks/imex_drain.yml), run by
ansible-playbook against two real vllm-router 0.1.17 processes on loopback
(from the lab's wheelhouse, as test_front_door_router.py): every rank-pinned
worker of the drained instance leaves both routers before the requests in
flight are waited for, the wait ends only when the instance reports none
(or at the router's request timeout, said aloud), and the other instance is
untouched. The workers are minimal HTTP processes serving /health and the
two vLLM gauges the drain reads. The IMEX restart itself and the unit
stop/start need systemd and nvidia-imex: not run here (docs/gb200-layout.md).
"""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import BIN, ENV, ROOT
from test_front_door import _free_port
from test_front_door_router import WHEEL, vllm_router  # noqa: F401  (fixture)

pytestmark = [pytest.mark.playbook,
              pytest.mark.skipif(not WHEEL, reason="needs the lab wheelhouse (labctl.py assets)")]

PLAYBOOK = """
- name: Drain one instance for an IMEX restart
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Plan the IMEX restart of tray-a, where prefill-0 runs
      ansible.builtin.set_fact:
        steps: "{{ pd_plan | pd_imex_restart_steps(['tray-a'], [['tray-a', 'vllm-prefill-0']]) }}"

    - name: Drain as the nvidia role's IMEX restart does
      ansible.builtin.include_role:
        name: nvidia
        tasks_from: imex_drain.yml
      vars:
        _nvidia_drain_instances: "{{ steps[0].instances }}"

    - name: Read every router's workers where the units would stop
      ansible.builtin.uri:
        url: "{{ item.url }}/workers"
        return_content: true
      loop: "{{ pd_plan.router.hosts }}"
      register: at_stop
      failed_when: false

    - name: Record them
      ansible.builtin.copy:
        dest: "{{ out }}"
        mode: "0644"
        # A router that is down has no json in its result.
        content: >-
          {%- set listed = [] -%}
          {%- for r in at_stop.results -%}{%- set _ = listed.append(r.json | default(none)) -%}{%- endfor -%}
          {{ {'time': now(utc=true).timestamp(), 'workers': listed} | to_json }}
"""


class Worker(http.server.BaseHTTPRequestHandler):
    """/health, and /metrics with the vLLM gauges of `state`; records each poll of the drain."""

    def do_GET(self):
        state = self.server.state
        if self.path == "/metrics":
            # The routers poll /metrics too; the drain is Ansible's uri.
            if "ansible" in (self.headers.get("User-Agent") or ""):
                state["polls"].append(time.time())
            body = (f'vllm:num_requests_running{{engine="0",model_name="m"}} {state["running"]:.1f}\n'
                    f'vllm:num_requests_waiting{{engine="0",model_name="m"}} 0.0\n'
                    f'vllm:num_requests_running{{engine="1",model_name="m"}} 0.0\n').encode()
        else:
            body = b""
        self.send_response(200 if self.path in ("/health", "/metrics") else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def workers():
    servers = []
    for _ in range(2):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Worker)
        server.state = {"running": 0, "polls": []}
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield servers
    for server in servers:
        server.shutdown()


def _url(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def _listed(router_url: str) -> list[str] | None:
    try:
        with urllib.request.urlopen(f"{router_url}/workers", timeout=2) as answer:
            return sorted(w["url"] for w in json.load(answer)["workers"])
    except (urllib.error.URLError, ConnectionError):
        return None


class Router:
    """vllm-router 0.1.17 in static PD mode with rank-pinned workers, as the plan renders them."""

    def __init__(self, binary: str, prefill: list[str], decode: list[str]):
        self.url = f"http://127.0.0.1:{_free_port()}"
        args = [binary, "--host", "127.0.0.1", "--port", self.url.rsplit(":", 1)[1], "--vllm-pd-disaggregation"]
        for worker in prefill:
            args += ["--prefill", worker, "none"]
        for worker in decode:
            args += ["--decode", worker]
        args += ["--kv-connector", "nixl", "--worker-startup-timeout-secs", "30", "--worker-startup-check-interval",
                 "1", "--prometheus-host", "127.0.0.1", "--prometheus-port", str(_free_port())]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(600):
            if _listed(self.url):
                return
            time.sleep(0.1)
        self.stop()
        raise AssertionError("vllm-router did not come up")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def _plan(prefill: str, decode: str, routers: list[str], timeout: int) -> dict:
    def instance(name, pool, url, host):
        return {"name": name, "pool": pool, "role": pool, "unit": f"vllm-{name}", "url": url,
                "nodes": [{"host": host, "leader": True}]}
    return {
        "hosts": {"tray-a": {}, "tray-b": {}},
        "instances": [instance("prefill-0", "prefill", prefill, "tray-a"),
                      instance("decode-0", "decode", decode, "tray-b")],
        "router": {"mode": "pd_nixl", "hosts": [{"host": "localhost", "url": url} for url in routers],
                   "workers": {"prefill": [f"{prefill}@0", f"{prefill}@1"], "decode": [f"{decode}@0"]},
                   "effective": {"request_timeout_secs": timeout}},
    }


def _run(tmp_path: Path, plan: dict) -> tuple[subprocess.CompletedProcess, dict]:
    python = str(BIN / "python")
    (tmp_path / "hosts").write_text(
        "".join(f"{h} ansible_connection=local ansible_python_interpreter={python}\n"
                for h in ("localhost", "tray-a", "tray-b")))
    (tmp_path / "drain.yml").write_text(PLAYBOOK)
    (tmp_path / "vars.json").write_text(json.dumps({"pd_plan": plan, "out": str(tmp_path / "out.json")}))
    result = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(tmp_path / "hosts"),
                             "-e", f"@{tmp_path / 'vars.json'}", str(tmp_path / "drain.yml")],
                            capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    return result, json.loads((tmp_path / "out.json").read_text())


def test_the_instance_leaves_both_routers_before_its_requests_in_flight_are_awaited(
        vllm_router, workers, tmp_path):  # noqa: F811
    prefill, decode = (_url(s) for s in workers)
    ranks = [f"{prefill}@0", f"{prefill}@1"]
    routers = [Router(vllm_router, ranks, [f"{decode}@0"]) for _ in range(2)]
    gone: dict[str, float] = {}
    stop = threading.Event()

    def watch():  # when each router stopped listing prefill-0's ranks
        while not stop.is_set():
            for router in routers:
                listed = _listed(router.url)
                if router.url not in gone and listed is not None and not set(ranks) & set(listed):
                    gone[router.url] = time.time()
            time.sleep(0.05)

    workers[0].state["running"] = 2
    dropped: list[float] = []

    def finish():  # prefill-0's two requests end 3 s after the drain first asks
        while not workers[0].state["polls"] and not stop.is_set():
            time.sleep(0.05)
        time.sleep(3)
        workers[0].state["running"] = 0
        dropped.append(time.time())

    threads = [threading.Thread(target=watch), threading.Thread(target=finish)]
    try:
        for thread in threads:
            thread.start()
        assert all(_listed(r.url) == sorted([*ranks, f"{decode}@0"]) for r in routers)
        result, out = _run(tmp_path, _plan(prefill, decode, [r.url for r in routers], timeout=120))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        for router in routers:
            router.stop()
    polls = workers[0].state["polls"]
    # Both routers dropped every rank before the first in-flight poll...
    assert len(gone) == 2 and polls and max(gone.values()) < polls[0], (gone, polls[:1])
    # ...the wait outlasted the requests, and the stop point came after it.
    assert dropped and len(polls) >= 2 and polls[-1] >= dropped[0] and out["time"] >= dropped[0]
    # Where the units would stop, each router lists only the other instance.
    assert [sorted(w["url"] for w in listed["workers"]) for listed in out["workers"]] == [[f"{decode}@0"]] * 2
    assert workers[1].state["polls"] == []  # decode-0 was not drained
    for router in routers:
        assert f"{router.url.split('//')[1]}" in result.stdout
    said = " ".join(result.stdout.replace("''", "'").split())  # the YAML callback folds messages
    assert "no longer lists" in said and "prefill-0: drained, no request running or waiting" in said


def test_requests_left_at_the_request_timeout_and_a_router_that_is_down_are_said_aloud(
        vllm_router, workers, tmp_path):  # noqa: F811
    prefill, decode = (_url(s) for s in workers)
    router = Router(vllm_router, [f"{prefill}@0", f"{prefill}@1"], [f"{decode}@0"])
    down = f"http://127.0.0.1:{_free_port()}"
    workers[0].state["running"] = 3  # never finishes
    try:
        started = time.time()
        result, out = _run(tmp_path, _plan(prefill, decode, [router.url, down], timeout=5))
        took = time.time() - started
    finally:
        router.stop()
    assert took >= 5
    # The YAML callback folds long messages and doubles quotes inside them.
    said = " ".join(result.stdout.replace("''", "'").split())
    assert "WARNING: prefill-0 (" in said and ("still has 3 request(s) running or waiting after the router's "
                                                "request timeout (5 s): stopping it fails them") in said
    assert "router not running" in said and "nothing to drain from it" in said
    assert sorted(w["url"] for w in out["workers"][0]["workers"]) == [f"{decode}@0"]


def test_the_step_drains_before_it_stops_restarts_imex_before_it_starts_and_rejoins_routers_last():
    """The order of imex_restart_step.yml, which needs systemd and IMEX to run."""
    tasks = yaml.safe_load((ROOT / "roles" / "nvidia" / "tasks" / "imex_restart_step.yml").read_text())

    def what(task):
        if "ansible.builtin.include_tasks" in task:
            return task["ansible.builtin.include_tasks"]
        if "ansible.builtin.include_role" in task:
            return task["ansible.builtin.include_role"]["tasks_from"]
        if "ansible.builtin.systemd_service" in task:
            service = task["ansible.builtin.systemd_service"]
            return f"{service['name']} {service['state']}"
        return None

    def flat(items):
        for task in items:
            yield from flat(task["block"]) if "block" in task else [task]

    tasks = list(flat(tasks))
    order = [w for w in map(what, tasks) if w]
    assert order == ["imex_drain.yml", "{{ _nvidia_stop.unit }}.service stopped", "nvidia-imex restarted",
                     "restart_batch.yml", "imex_router_back.yml"]
    # The router step loops over the routers: one restarts at a time.
    back = next(t for t in tasks if t.get("ansible.builtin.include_tasks") == "imex_router_back.yml")
    assert back["loop"].strip() == "{{ pd_plan.router.hosts | default([]) }}"


def test_with_router_discovery_the_announcers_stop_and_the_expiry_passes_before_the_wait():
    """Discovery zmq: the routers have no list to remove from; the instance
    leaves when its announcer stops (systemd, not run here), 5 s later."""
    tasks = yaml.safe_load((ROOT / "roles" / "nvidia" / "tasks" / "imex_drain.yml").read_text())
    names = [t["name"] for t in tasks]
    stop = next(t for t in tasks if "ansible.builtin.systemd_service" in t)
    assert stop["ansible.builtin.systemd_service"] == {"name": "{{ _nvidia_drained.unit }}-announce.service",
                                                        "state": "stopped"}
    assert stop["delegate_to"] == "{{ _nvidia_drained.leader_host }}"
    assert "announce" in stop["when"]
    expiry = next(t for t in tasks if "ansible.builtin.wait_for" in t)
    assert expiry["ansible.builtin.wait_for"]["timeout"] > 5
    wait = next(t for t in tasks if t.get("ansible.builtin.include_role", {}).get("tasks_from") == "drain.yml")
    assert names.index(stop["name"]) < names.index(expiry["name"]) < names.index(wait["name"])
