"""tools/fault_inject.py stays on the lab: only loopback and the lab network are targeted, and its
bounds are checked before anything runs (the faults themselves run against `make lab`)."""

from __future__ import annotations

import importlib.util
import ipaddress
import subprocess
import sys

import pytest
from conftest import ROOT

TOOL = ROOT / "tools" / "fault_inject.py"


def _tool():
    spec = importlib.util.spec_from_file_location("fault_inject", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fault_inject", module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://10.89.60.5:29000/metrics",
                                 "http://10.89.60.21:8200"])
def test_lab_addresses_are_accepted(url):
    _tool().require_lab_address(url, ipaddress.ip_network("10.89.60.0/24"))


@pytest.mark.parametrize("url", ["http://10.89.61.5:8000", "http://8.8.8.8/", "http://192.168.1.10:8100"])
def test_other_addresses_are_refused(url):
    with pytest.raises(SystemExit, match="only loopback and the lab network"):
        _tool().require_lab_address(url, ipaddress.ip_network("10.89.60.0/24"))


@pytest.mark.parametrize(("args", "message"), [
    (["--faults", "prefill,gpu"], "unknown ['gpu']"),
    (["--interval", "0.01"], "--interval must be"),
    (["--timeout", "7200"], "--timeout 10-1800"),
])
def test_bad_arguments_fail_before_touching_the_lab(args, message):
    result = subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, check=False)
    assert result.returncode == 2 and message in result.stderr, result.stderr


ROUTER_METRICS = """# TYPE vllm_router_worker_health gauge
vllm_router_worker_health{worker="http://10.89.60.11:8100@0"} 1
vllm_router_worker_health{worker="http://10.89.60.11:8100@1"} 0
vllm_router_worker_health{worker="http://10.89.60.12:8100"} 1
vllm_router_worker_health{worker="http://10.89.60.21:8200@0"} 1
vllm_router_worker_health{worker="http://10.89.60.21:8200@1"} 1
vllm_router_worker_health{worker="http://10.89.60.21:82000@0"} 0
"""


@pytest.fixture
def health():
    tool = _tool()
    return tool, {url: float(v) for url, v in
                  (line.split('worker="')[1].split('"} ') for line in ROUTER_METRICS.splitlines()[1:])}


@pytest.mark.parametrize(("url", "gauge"), [
    ("http://10.89.60.11:8100", 0),   # DP=2: one rank still down -> not routed yet
    ("http://10.89.60.21:8200", 1),   # DP=2: every rank healthy (port 82000 is another worker)
    ("http://10.89.60.12:8100", 1),   # DP=1: registered bare
    ("http://10.89.60.13:8100", None),  # not registered
])
def test_router_gauge_matches_bare_and_rank_pinned_urls(health, url, gauge):
    tool, values = health
    assert tool.worker_gauge(values, url) == gauge


def test_router_health_parses_rank_pinned_workers(tmp_path):
    """router_health reads the gauge from a real /metrics page (served from a file here)."""
    tool = _tool()
    page = tmp_path / "metrics"
    page.write_text((ROOT / "tests" / "fixtures" / "metrics" / "vllm-router-0.1.17-pd.prom").read_text()
                    + ROUTER_METRICS.split("\n", 1)[1])
    values = tool.router_health(page.as_uri())
    assert values["http://10.89.60.11:8100@1"] == 0
    assert tool.worker_gauge(values, "http://10.89.60.21:8200") == 1
