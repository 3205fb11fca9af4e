"""Discovery zmq: the real vllm-router 0.1.17 with --vllm-discovery-address,
the real pd_announce.py (roles/vllm/files, on the lab's vLLM venv Python,
which has pyzmq). Workers join and leave with the router's process
untouched, a request loop sees no failure while they do, a worker whose
/health fails leaves, data-parallel ranks are routed as announced
(`url@rank`). The workers are minimal HTTP processes: the router's discovery
is under test, not serving."""

from __future__ import annotations

import collections
import http.server
import json
import subprocess
import threading
import time

import pytest
from conftest import ROOT
from stand_in import StandInWorker
from test_front_door import _free_port
from test_front_door_router import WHEEL, status, vllm_router  # noqa: F401 (fixture)

VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
ANNOUNCE = ROOT / "roles" / "vllm" / "files" / "pd_announce.py"
pytestmark = pytest.mark.skipif(not WHEEL or not VLLM_PYTHON.exists(),
                                reason="needs the lab wheelhouse (labctl.py assets) and .venv-vllm (make test-setup)")


class CountingWorker(StandInWorker):
    """Counts the requests it serves, per data-parallel rank header; /health
    answers 503 while `sick`."""

    served: collections.Counter
    sick = False

    def do_GET(self):
        if self.path == "/health" and self.sick:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def do_POST(self):
        self.served[self.headers.get("X-data-parallel-rank")] += 1
        super().do_POST()


class Worker:
    def __init__(self):
        handler = type("Handler", (CountingWorker,), {"served": collections.Counter(), "sick": False})
        self.handler = handler
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def served(self) -> collections.Counter:
        return self.handler.served

    def stop(self):
        self.server.shutdown()


class Announcer:
    def __init__(self, kind: str, worker: Worker, discovery: int, tmp_path, addresses: list[str] | None = None,
                 ready_file=None):
        self.state = tmp_path / f"announce-{kind}-{worker.url.rsplit(':', 1)[1]}.json"
        ready = ["--ready-file", str(ready_file)] if ready_file else []
        self.proc = subprocess.Popen(
            [str(VLLM_PYTHON), str(ANNOUNCE), "--type", kind, "--health", f"{worker.url}/health",
             "--router", f"tcp://127.0.0.1:{discovery}", "--interval", "0.5", "--state", str(self.state), *ready,
             *[arg for a in (addresses or [worker.url]) for arg in ("--address", a)]],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def record(self) -> dict:
        return json.loads(self.state.read_text()) if self.state.exists() else {}

    def stop(self) -> str:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        return out


class DiscoveryRouter:
    def __init__(self, binary: str, prefill_policy: str = "round_robin"):
        self.port, self.discovery = _free_port(), _free_port()
        self.proc = subprocess.Popen(
            [binary, "--host", "127.0.0.1", "--port", str(self.port), "--vllm-pd-disaggregation",
             "--vllm-discovery-address", f"127.0.0.1:{self.discovery}", "--kv-connector", "nixl",
             "--prefill-policy", prefill_policy, "--decode-policy", "round_robin",
             "--prometheus-host", "127.0.0.1", "--prometheus-port", str(_free_port())],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"

    def health(self) -> int | str:
        return status("GET", f"{self.url}/health")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def wait_until(condition, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, f"{what}: not within {timeout} s"
        time.sleep(0.1)
    return time.monotonic() - start


class Loop:
    """Chat requests through the router, back to back, until finished."""

    def __init__(self, url: str):
        self.url, self.results, self.done = url, [], threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self):
        while not self.done.is_set():
            self.results.append(status("POST", f"{self.url}/v1/chat/completions"))
            time.sleep(0.02)

    def finish(self) -> collections.Counter:
        self.done.set()
        self.thread.join()
        return collections.Counter(self.results)


@pytest.fixture(params=["round_robin", "cache_aware"])
def cluster(vllm_router, tmp_path, request):  # noqa: F811 (the fixture imported above)
    # cache_aware (the GB200 sample's prefill policy) builds its trees lazily
    # in discovery mode: joins and leaves must work with it too.
    router = DiscoveryRouter(vllm_router, prefill_policy=request.param)
    workers: list[Worker] = []
    announcers: list[Announcer] = []

    def add(kind: str, addresses_of=None, ready_file=None) -> tuple[Worker, Announcer]:
        worker = Worker()
        announcer = Announcer(kind, worker, router.discovery, tmp_path,
                              addresses_of(worker.url) if addresses_of else None, ready_file)
        workers.append(worker)
        announcers.append(announcer)
        return worker, announcer

    yield router, add
    for announcer in announcers:
        if announcer.proc.poll() is None:
            announcer.stop()
    for worker in workers:
        worker.stop()
    router.stop()


def test_announced_workers_serve_and_a_new_one_joins_without_a_router_restart(cluster):
    router, add = cluster
    prefill, _ = add("P")
    decode, decode_announcer = add("D", lambda url: [f"{url}@0", f"{url}@1"])
    wait_until(lambda: router.health() == 200, 30, "the router sees one prefill and one decode")
    assert decode_announcer.record()["announcing"] is True
    assert list(decode_announcer.record()["routers"].values()) == [True]
    for _ in range(6):
        assert status("POST", f"{router.url}/v1/chat/completions") == 200
    # Decode is announced per rank: each request names its rank.
    assert set(decode.served) == {"0", "1"}, decode.served
    assert set(prefill.served) == {None}, prefill.served

    pid = router.proc.pid
    loop = Loop(router.url)
    second, _ = add("P")
    joined = wait_until(lambda: second.served.total() > 0, 15, "the new prefill gets requests")
    counts = loop.finish()
    assert router.proc.poll() is None and router.proc.pid == pid
    assert set(counts) == {200}, counts
    print(f"\nprefill joined: first request after {joined:.1f} s; loop {dict(counts)}")


def test_a_stopped_announcer_leaves_within_the_expiry_and_no_request_fails(cluster):
    router, add = cluster
    first, _ = add("P")
    leaving, announcer = add("P")
    add("D")
    wait_until(lambda: first.served.total() + leaving.served.total() == 0 and router.health() == 200, 30, "ready")
    wait_until(lambda: status("POST", f"{router.url}/v1/chat/completions") == 200 and leaving.served.total() > 0,
               15, "both prefills in use")
    loop = Loop(router.url)
    time.sleep(0.5)
    out = announcer.stop()
    assert "stopped" in out, out
    # The worker still runs while the router forgets it (the drain window).
    time.sleep(6)
    before = leaving.served.total()
    time.sleep(2)
    counts = loop.finish()
    assert leaving.served.total() == before, "requests still reach a worker 6 s after its last announcement"
    assert set(counts) == {200}, counts


def test_a_worker_whose_health_fails_stops_being_announced_and_leaves(cluster):
    router, add = cluster
    good, _ = add("P")
    sick, announcer = add("P")
    add("D")
    wait_until(lambda: router.health() == 200, 30, "ready")
    wait_until(lambda: status("POST", f"{router.url}/v1/chat/completions") == 200 and sick.served.total() > 0,
               15, "both prefills in use")
    sick.handler.sick = True
    wait_until(lambda: announcer.record().get("announcing") is False, 5, "the announcer notices")
    assert "HTTP 503" in announcer.record()["why"]
    time.sleep(6)
    before = sick.served.total()
    for _ in range(6):
        assert status("POST", f"{router.url}/v1/chat/completions") == 200
    assert sick.served.total() == before
    assert good.served.total() > 0
    # Healthy again: announced again, routed to again, no restart anywhere.
    sick.handler.sick = False
    wait_until(lambda: announcer.record().get("announcing") is True, 5, "announced again")
    wait_until(lambda: status("POST", f"{router.url}/v1/chat/completions") == 200 and sick.served.total() > before,
               15, "routed to again")


def test_the_announcer_refuses_an_interval_the_router_would_expire():
    result = subprocess.run([str(VLLM_PYTHON), str(ANNOUNCE), "--type", "P", "--health", "http://127.0.0.1:1/health",
                             "--router", "tcp://127.0.0.1:1", "--address", "http://127.0.0.1:1", "--interval", "5"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "--interval must be 0.1 to 2 s" in result.stderr


def test_an_instance_is_announced_only_once_its_start_gate_marked_it_ready(cluster, tmp_path):
    """After a crash, systemd's restart answers /health before its warm-up:
    the announcer waits for the gate's ready file (pd-worker-gate writes it
    after the warm-up, the next start removes it)."""
    router, add = cluster
    ready = tmp_path / "ready"
    prefill, announcer = add("P", ready_file=ready)
    add("D")
    wait_until(lambda: announcer.record().get("announcing") is False, 10, "the announcer reports")
    assert "waiting for the start gate" in announcer.record()["why"]
    time.sleep(2)
    assert router.health() == 503  # no prefill announced
    ready.write_text("1\n")
    wait_until(lambda: router.health() == 200, 10, "announced once ready")
    assert status("POST", f"{router.url}/v1/chat/completions") == 200
    assert prefill.served.total() > 0
