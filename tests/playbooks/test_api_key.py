"""pd_router.api_key_enabled end to end, with the real vllm-router 0.1.17:
the router's env file (roles/vllm_router/templates/router.env.j2, rendered by
Ansible) makes the router send the key on every prefill and decode request,
and each worker's env file (roles/vllm_worker/templates/vllm-worker.env.j2)
makes vLLM require it (VLLM_API_KEY). Measured on 0.1.17: in PD mode the
router authenticates with $OPENAI_API_KEY and sends "Bearer " (empty) with
--api-key alone, so a router without the env variable is refused by the
workers. The workers here answer like vLLM's AuthenticationMiddleware (401 on
/v1/* without the key, /health and /metrics open; measured on the CPU build,
docs/security.md); the router is real."""

from __future__ import annotations

import copy
import http.server
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from typing import ClassVar

import pytest
from conftest import ROOT, inventory_spec, local_play
from pd_planner import build_plan
from stand_in import StandInWorker
from test_front_door import _free_port
from test_router_argcheck import VENV, router_python  # noqa: F401  (fixture)

pytestmark = pytest.mark.playbook

KEY = "router-key-0123456789-abc"


@pytest.fixture(scope="module")
def keyed_plan() -> dict:
    plan = build_plan(inventory_spec(ROOT / "inventories" / "lab"))
    plan = copy.deepcopy(plan)
    plan["router"]["api_key_env"] = "VLLM_ROUTER_API_KEY"
    return plan


RENDER = """
- name: Render the env templates
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Router env
      ansible.builtin.copy:
        content: "{{ lookup('ansible.builtin.template', root ~ '/roles/vllm_router/templates/router.env.j2') }}"
        dest: "{{ out }}/router.env"
        mode: "0600"
      vars:
        vllm_router_unit: vllm-router
    - name: Worker env, on a host and in a render
      ansible.builtin.copy:
        content: "{{ lookup('ansible.builtin.template', root ~ '/roles/vllm_worker/templates/vllm-worker.env.j2') }}"
        dest: "{{ out }}/worker-{{ _case.name }}.env"
        mode: "0600"
      vars:
        _w: "{{ pd_plan.instances[0].nodes[0] | combine({'unit': 'vllm-prefill-0', 'instance': 'prefill-0'}) }}"
        _vllm_worker_root: "{{ _case.root }}"
      loop: [{name: host, root: ""}, {name: render, root: /tmp/render}]
      loop_control:
        loop_var: _case
"""


def render(tmp_path, plan: dict) -> dict[str, dict[str, str]]:
    result = local_play(tmp_path, RENDER, {
        "pd_plan": plan, "out": str(tmp_path), "root": str(ROOT),
        "vllm_router_api_key": KEY, "vllm_worker_api_key": KEY}, name="render.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert KEY not in result.stdout + result.stderr, "the key reached Ansible's output"
    files = {}
    for name in ("router", "worker-host", "worker-render"):
        pairs = [line.split("=", 1) for line in (tmp_path / f"{name}.env").read_text().splitlines()
                 if line and not line.startswith("#")]
        files[name] = {k: v.strip('"') for k, v in pairs}
    return files


def test_env_files_carry_the_key_where_it_is_needed(tmp_path, keyed_plan):
    files = render(tmp_path, keyed_plan)
    assert files["router"]["VLLM_ROUTER_API_KEY"] == KEY
    assert files["router"]["OPENAI_API_KEY"] == KEY
    assert files["worker-host"]["VLLM_API_KEY"] == KEY
    assert "VLLM_API_KEY" not in files["worker-render"], "render.yml's files never hold the key"
    plain = copy.deepcopy(keyed_plan)
    plain["router"]["api_key_env"] = None
    files = render(tmp_path, plain)
    assert "OPENAI_API_KEY" not in files["router"] and "VLLM_API_KEY" not in files["worker-host"]


class _Worker(StandInWorker):
    """vLLM's AuthenticationMiddleware rule: /v1/* needs "Bearer <key>"."""

    key = ""
    seen: ClassVar[list] = []
    get_paths = ("/health", "/metrics")
    delay = 0
    body = b'{"id":"x","object":"text_completion","choices":[{"index":0,"text":"ok","finish_reason":"stop"}]}'

    def allowed(self) -> bool:
        return not self.path.startswith("/v1") or self.headers.get("Authorization") == f"Bearer {self.key}"

    def do_POST(self):
        self.seen.append((self.path, self.allowed()))
        super().do_POST()


def _through_router(router_env: dict, worker_key: str) -> tuple[int, list]:
    handler = type("W", (_Worker,), {"key": worker_key, "seen": []})
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    prefill, decode = (f"http://127.0.0.1:{s.server_port}" for s in servers)
    port, metrics = _free_port(), _free_port()
    router = subprocess.Popen(
        [str(VENV / "bin" / "vllm-router"), "--vllm-pd-disaggregation", "--prefill", prefill, "none",
         "--decode", decode, "--host", "127.0.0.1", "--port", str(port), "--prometheus-port", str(metrics),
         "--api-key", router_env.get("VLLM_ROUTER_API_KEY", ""), "--policy", "round_robin"],
        env={"PATH": "/usr/bin:/bin", **router_env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                assert time.monotonic() < deadline and router.poll() is None, "the router never came up"
                time.sleep(0.3)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/completions", method="POST", headers={"Content-Type": "application/json"},
            data=json.dumps({"model": "tiny-llama", "prompt": "hi", "max_tokens": 1}).encode())
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                status = answer.status
        except urllib.error.HTTPError as error:
            status = error.code
        return status, handler.seen
    finally:
        router.kill()
        router.wait()
        for server in servers:
            server.shutdown()


def test_the_real_router_sends_the_workers_key_from_its_env_file(router_python, tmp_path, keyed_plan):  # noqa: F811
    router_env = render(tmp_path, keyed_plan)["router"]
    status, seen = _through_router(router_env, KEY)
    assert status == 200
    assert seen and all(allowed for _path, allowed in seen), seen
    # What the role did before: the key on --api-key only. The workers refuse the router.
    status, seen = _through_router({"VLLM_ROUTER_API_KEY": KEY}, KEY)
    assert status != 200
    assert seen and not any(allowed for _path, allowed in seen), seen
