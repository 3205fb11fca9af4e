"""The front door in front of the real vllm-router 0.1.17 (from the lab's
wheelhouse, `make lab` or `labctl.py assets`) and the real nginx: the router
itself answers its admin API to anyone (why the front door exists), the
front door refuses it, and with two routers a router restart under a request
loop refuses nothing. The workers are minimal HTTP processes (health and a
5 ms answer): the router's registration and failover are under test, not
serving."""

from __future__ import annotations

import collections
import http.server
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from conftest import ROOT
from stand_in import StandInWorker
from test_front_door import NGINX, _free_port, _render

WHEEL = sorted((ROOT / ".lab" / "wheelhouse").glob("vllm_router-0.1.17-*.whl"))
pytestmark = pytest.mark.skipif(not WHEEL or NGINX is None,
                                reason="needs the lab wheelhouse (labctl.py assets) and nginx (make unit)")


@pytest.fixture(scope="module")
def vllm_router() -> str:
    """vllm-router 0.1.17 in .cache (made once from the wheelhouse, reused)."""
    venv = ROOT / ".cache" / "vllm-router-0.1.17"
    binary = venv / "bin" / "vllm-router"
    if not (venv / ".installed").is_file():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-index", "--find-links",
                        str(WHEEL[0].parent), "vllm-router==0.1.17"], check=True)
        (venv / ".installed").write_text("vllm-router==0.1.17\n")
    return str(binary)


@pytest.fixture(scope="module")
def workers():
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), StandInWorker) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield [f"http://127.0.0.1:{s.server_address[1]}" for s in servers]
    for server in servers:
        server.shutdown()


class Router:
    def __init__(self, binary: str, workers: list[str]):
        self.port, self.binary, self.workers = _free_port(), binary, workers
        self.start()

    def start(self):
        prefill, decode = self.workers
        self.proc = subprocess.Popen(
            [self.binary, "--host", "127.0.0.1", "--port", str(self.port), "--vllm-pd-disaggregation",
             "--prefill", prefill, "none", "--decode", decode, "--kv-connector", "nixl",
             "--worker-startup-timeout-secs", "30", "--worker-startup-check-interval", "1",
             "--prometheus-host", "127.0.0.1", "--prometheus-port", str(_free_port())],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1)
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        raise AssertionError("vllm-router did not come up")

    def restart(self):
        self.stop()
        self.start()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Nginx:
    def __init__(self, tmp, routers: list[Router]):
        self.port = _free_port()
        values = {"front_door_routers": [f"127.0.0.1:{r.port}" for r in routers], "front_door_require_api_key": False,
                  "front_door_api_keys": [], "front_door_config_dir": str(tmp), "front_door_tls": False,
                  "front_door_bind_address": "127.0.0.1", "front_door_port": self.port,
                  "front_door_admin_sources": ["10.89.60.1"], "front_door_read_timeout_sec": 60,
                  "front_door_client_max_body_size": "16m"}
        (tmp / "pd-front-door.conf").write_text(_render("pd-front-door.conf.j2", **values))
        temp = "".join(f"    {k}_temp_path {tmp}/{k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (tmp / "nginx.conf").write_text(
            f"pid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\ndaemon off;\nevents {{}}\n"
            f"http {{\n    access_log off;\n{temp}    include {tmp}/pd-front-door.conf;\n}}\n")
        self.proc = subprocess.Popen([NGINX, "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "err")])
        time.sleep(0.5)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def status(method: str, url: str) -> int | str:
    body = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":4}' if method == "POST" else None
    request = urllib.request.Request(url, method=method, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, ConnectionError) as error:
        return "refused" if "refused" in str(error) else type(error).__name__


def test_the_router_answers_admin_calls_to_anyone_the_front_door_does_not(vllm_router, workers, tmp_path):
    router = Router(vllm_router, workers)
    front = Nginx(tmp_path, [router])
    try:
        bogus = "/remove_worker?url=http%3A//10.0.0.1%3A8100"
        assert status("POST", f"http://127.0.0.1:{router.port}{bogus}") == 200
        assert status("POST", f"http://127.0.0.1:{front.port}{bogus}") == 403
        assert status("GET", f"http://127.0.0.1:{front.port}/workers") == 403
        assert status("POST", f"http://127.0.0.1:{front.port}/v1/chat/completions") == 200
    finally:
        front.stop()
        router.stop()


def test_a_router_restart_behind_the_front_door_refuses_nothing(vllm_router, workers, tmp_path):
    routers = [Router(vllm_router, workers), Router(vllm_router, workers)]
    front = Nginx(tmp_path, routers)
    stop, results = threading.Event(), []

    def client():
        while not stop.is_set():
            results.append(status("POST", f"http://127.0.0.1:{front.port}/v1/chat/completions"))
            time.sleep(0.02)

    threads = [threading.Thread(target=client) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(1)
        routers[0].restart()
        time.sleep(1)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        front.stop()
        for router in routers:
            router.stop()
    counts = collections.Counter(results)
    assert counts[200] > 20 and set(counts) == {200}, counts
