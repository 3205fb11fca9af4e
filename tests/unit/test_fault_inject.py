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
