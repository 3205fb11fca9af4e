"""The front door's nginx config, served by the real nginx from Debian
(bookworm's package, unpacked into .cache/nginx; PD_NGINX overrides):
clients get /v1/* and health only, the admin API is refused to them, and a
request without a client key gets 401 when keys are required."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import jinja2
import pytest
import yaml
from conftest import ROOT

ROLE = ROOT / "roles" / "front_door"
KEY = "lab-client-key-0123456789abcdef"


def _nginx() -> str | None:
    path = os.environ.get("PD_NGINX") or str(ROOT / ".cache" / "nginx" / "usr" / "sbin" / "nginx")
    return path if os.path.exists(path) else shutil.which("nginx")


NGINX = _nginx()
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx not unpacked: apt-get download nginx; dpkg -x it "
                                                      "into .cache/nginx")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _render(name: str, **values) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(ROLE / "templates")),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["bool"] = bool
    return env.get_template(name).render({"ansible_managed": "managed", **values})


class FrontDoor:
    def __init__(self, tmp: Path, *, keys: list[str], admin_sources: list[str], router_port: int):
        self.port = _free_port()
        values = {
            "front_door_routers": [f"127.0.0.1:{router_port}"], "front_door_require_api_key": bool(keys),
            "front_door_api_keys": keys, "front_door_config_dir": str(tmp), "front_door_tls": False,
            "front_door_bind_address": "127.0.0.1", "front_door_port": self.port,
            "front_door_admin_sources": admin_sources, "front_door_read_timeout_sec": 60,
            "front_door_client_max_body_size": "16m",
        }
        self.conf = tmp / "pd-front-door.conf"
        self.conf.write_text(_render("pd-front-door.conf.j2", **values))
        (tmp / "client-keys.conf").write_text(_render("client-keys.conf.j2", **values))
        (tmp / "nginx.conf").write_text(
            f"pid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\ndaemon off;\nevents {{}}\n"
            f"http {{\n    access_log off;\n    client_body_temp_path {tmp}/body;\n"
            f"    proxy_temp_path {tmp}/proxy;\n    fastcgi_temp_path {tmp}/fastcgi;\n"
            f"    uwsgi_temp_path {tmp}/uwsgi;\n    scgi_temp_path {tmp}/scgi;\n    include {self.conf};\n}}\n")
        self.proc = subprocess.Popen([NGINX, "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "err")],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        self.proc.kill()
        raise AssertionError(f"nginx did not listen: {self.proc.stdout.read().decode()}")

    def status(self, method: str, path: str, key: str | None = None) -> int:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                         data=b"{}" if method == "POST" else None)
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status
        except urllib.error.HTTPError as error:
            return error.code

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def door(tmp_path):
    # The router port: nothing listens, so a request let through gets 502
    # (nginx could not reach a router), never 401/403/404.
    made = []

    def make(**kwargs):
        made.append(FrontDoor(tmp_path, router_port=_free_port(), **kwargs))
        return made[-1]

    yield make
    for front in made:
        front.stop()


def test_clients_reach_the_api_and_health_but_not_the_admin_api(door):
    front = door(keys=[KEY], admin_sources=[])
    # Client paths pass through (502: no router in this test).
    assert front.status("POST", "/v1/chat/completions", KEY) == 502
    assert front.status("GET", "/v1/models", KEY) == 502
    assert front.status("GET", "/health") == 502
    assert front.status("POST", "/remove_worker?url=http://10.0.0.1:8100") == 403
    assert front.status("GET", "/metrics") == 404
    assert front.status("GET", "/get_server_info") == 404


def test_a_request_without_or_with_a_wrong_key_gets_401(door):
    front = door(keys=[KEY], admin_sources=[])
    assert front.status("POST", "/v1/chat/completions") == 401
    assert front.status("POST", "/v1/chat/completions", "not-a-listed-key-000000") == 401
    assert front.status("POST", "/v1/completions", KEY) == 502


def test_without_keys_the_api_is_open(door):
    front = door(keys=[], admin_sources=[])
    assert front.status("POST", "/v1/chat/completions") == 502


@pytest.mark.parametrize("path", ["/remove_worker?url=http://10.0.0.1:8100", "/add_worker?url=x", "/flush_cache",
                                  "/workers", "/list_workers", "/workers/http%3A%2F%2Fa"])
def test_admin_api_is_refused_to_a_client_that_is_not_the_control_host(door, path):
    # The control host is elsewhere: this client (127.0.0.1) is not it.
    front = door(keys=[KEY], admin_sources=["10.89.60.1"])
    for method in ("POST", "GET", "DELETE"):
        assert front.status(method, path, KEY) == 403, method


def test_admin_api_passes_for_the_control_host(door):
    front = door(keys=[KEY], admin_sources=["127.0.0.1", "10.89.60.0/24"])
    assert "allow 10.89.60.0/24;" in front.conf.read_text()
    # From loopback (this host): let through to the router (502 here).
    assert front.status("POST", "/remove_worker?url=http://10.0.0.1:8100") == 502
    assert front.status("GET", "/workers") == 502


def test_the_config_check_refuses_a_broken_file(tmp_path):
    check = ROLE / "files" / "pd-nginx-check"
    bad = tmp_path / "bad.conf"
    bad.write_text("server { listen 127.0.0.1:1; location / { retrun 404; } }\n")
    env = {**os.environ, "PATH": f"{Path(NGINX).parent}:{os.environ['PATH']}"}
    result = subprocess.run([str(check), str(bad)], capture_output=True, text=True, env=env, check=False)
    assert result.returncode != 0 and "retrun" in result.stderr


def test_keys_never_reach_a_world_readable_file_or_the_log():
    tasks = yaml.safe_load((ROLE / "tasks" / "main.yml").read_text())
    keys = next(t for t in tasks if t.get("ansible.builtin.template", {}).get("src") == "client-keys.conf.j2")
    assert keys["no_log"] is True and keys["ansible.builtin.template"]["mode"] == "0600"
    conf = next(t for t in tasks if t.get("ansible.builtin.template", {}).get("src") == "pd-front-door.conf.j2")
    assert "api_keys" not in (ROLE / "templates" / "pd-front-door.conf.j2").read_text()
    assert conf["ansible.builtin.template"]["mode"] == "0644"
    directory = next(t for t in tasks if t.get("ansible.builtin.file", {}).get("mode") == "0700")
    assert directory["ansible.builtin.file"]["path"] == "{{ front_door_config_dir }}"
