"""Every dashboard expression and recording rule returns data from a real
Prometheus (Debian's, beside promtool) scraping the real /metrics captured
from the lab's vLLM 0.32 prefill and decode (NIXL) and vllm-router 0.1.17,
judged by the same function the live lab check uses
(playbooks/files/pd_verify_monitoring.py). The lab run adds traffic and the
real targets; this catches an expression that can never return data (a
label vLLM does not set, a series only one pool has, a `> 0` filter) in
seconds, without the lab."""

from __future__ import annotations

import http.server
import importlib.util
import json
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from pd_planner import build_plan, monitoring

FIXTURES = ROOT / "tests" / "fixtures" / "metrics"
TARGETS = {  # job -> (fixture, labels the plan's file_sd gives the target)
    "vllm-prefill": ("vllm-0.32.0-prefill-nixl.prom", {"pool": "prefill", "instance": "prefill-0"}),
    "vllm-decode": ("vllm-0.32.0-decode-nixl.prom", {"pool": "decode", "instance": "decode-0"}),
    "vllm-router": ("vllm-router-0.1.17-pd.prom", {"pool": "router", "instance": "router-0"}),
}


def verify_module():
    spec = importlib.util.spec_from_file_location(
        "pd_verify_monitoring", ROOT / "playbooks" / "files" / "pd_verify_monitoring.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Fixtures(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = (FIXTURES / TARGETS[self.path.strip("/")][0]).read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args) -> None:
        pass


@pytest.fixture
def prometheus_on_fixtures(lab_spec, promtool, tmp_path):
    plan = build_plan(lab_spec)
    binary = Path(promtool).with_name("prometheus")
    if not binary.exists():
        pytest.fail(f"prometheus not found beside promtool at {binary}: run `make promtool`")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Fixtures)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    exporter = f"127.0.0.1:{server.server_address[1]}"
    rules = tmp_path / "rules"
    rules.mkdir()
    for name, doc in monitoring.rule_files(plan).items():
        (rules / name).write_text(yaml.safe_dump(doc, sort_keys=False, width=1000))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [f"{rules}/*.yml"],
        "scrape_configs": [
            {"job_name": job, "metrics_path": f"/{job}", "honor_labels": False,
             "static_configs": [{"targets": [exporter], "labels": labels}]}
            for job, (_, labels) in TARGETS.items()
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [str(binary), f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        yield plan, url
    finally:
        process.terminate()
        process.wait(timeout=30)
        server.shutdown()


def wait_for_samples(url: str, timeout: float = 60) -> None:
    """Until every target has been scraped a few times (rates need two
    samples) and the rules have evaluated."""
    deadline = time.monotonic() + timeout
    query = "count_over_time(up[1m])"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/api/v1/query?query={query}", timeout=5) as answer:
                result = json.loads(answer.read())["data"]["result"]
            if len(result) == len(TARGETS) and all(float(r["value"][1]) >= 5 for r in result):
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"Prometheus did not scrape the fixtures within {timeout} s")


def test_every_dashboard_expression_returns_data_from_real_vllm_series(prometheus_on_fixtures, capsys):
    plan, url = prometheus_on_fixtures
    wait_for_samples(url)
    verify = verify_module()
    assert verify.check_rules(url) == []
    failures = verify.check_expressions(url, plan)
    printed = capsys.readouterr().out
    assert failures == [], "\n".join(failures) + "\n" + printed
    # Only DCGM may be empty here (the lab plan has no GPU node), as in the lab.
    empty = [line for line in printed.splitlines() if "no data" in line]
    assert empty and all("DCGM" in line or 'job="dcgm"' in line for line in empty), printed


def test_router_discovery_excuses_only_the_router_worker_health_series(lab_spec):
    """Announced workers are outside vllm-router's registry: no health gauge,
    which verify.yml must say instead of failing; static mode has it."""
    verify = verify_module()
    discovery = verify.cannot_produce(build_plan(lab_spec))
    assert set(discovery) >= {"vllm_router_worker_health", "vllm_router_unhealthy_workers"}
    assert "router discovery" in discovery["vllm_router_worker_health"]
    static_spec = {**lab_spec, "router": {**lab_spec["router"], "discovery": "static"}}
    static = verify.cannot_produce(build_plan(static_spec))
    assert "vllm_router_worker_health" not in static and "vllm_router_unhealthy_workers" not in static
