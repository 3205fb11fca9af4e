"""Rerun to scale: 1P+1D -> 2P+1D -> 1P+1D under a steady request loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
sys.path.insert(0, str(ROOT / "bench"))
from loadgen import Load  # noqa: E402

INVENTORY_FILE = Path(os.environ["MOLECULE_INVENTORY_FILE"])
INVENTORY = INVENTORY_FILE.parent
ORIGINAL = {"mol-sc-p0": "vllm-prefill-0", "mol-sc-d0": "vllm-decode-0"}


def node(host, name: str):
    return host.get_host(f"ansible://{name}", ansible_inventory=str(INVENTORY_FILE))


def address(target) -> str:
    return target.ansible("setup", "gather_subset=network")["ansible_facts"]["ansible_default_ipv4"]["address"]


def started_at(target, unit: str) -> str:
    return target.check_output(f"systemctl show -p ActiveEnterTimestamp --value {unit}")


def router_workers(router: str) -> dict:
    with urllib.request.urlopen(f"{router}/workers", timeout=10) as answer:
        workers = json.loads(answer.read())["workers"]
    found = {"prefill": [], "decode": []}
    for worker in workers:
        found[worker["worker_type"]].append(worker["url"])
    return {kind: sorted(urls) for kind, urls in found.items()}


def site_under_load(router: str, tmp_path: Path, group: str, label: str) -> Load:
    """site.yml with the spare node added to `group`, a request loop running
    through the router the whole time; the run must pass and no request fail."""
    extra = tmp_path / f"{group}.yml"
    extra.write_text(json.dumps({"all": {"children": {group: {"hosts": {"mol-sc-p1": {}}}}}}))
    load = Load(router)
    load.start()
    out = subprocess.run(["ansible-playbook", str(ROOT / "playbooks" / "site.yml"), "-i", str(INVENTORY),
                          "-i", str(extra)], capture_output=True, text=True, check=False, cwd=ROOT)
    load.finish()
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    print(f"{label}: {load.summary()}")
    assert not load.failed, load.failed[:5]
    return load


def original_starts(host) -> dict[str, str]:
    return {n: started_at(node(host, n), unit) for n, unit in ORIGINAL.items()}


def test_scale_out_then_in_under_load(host, tmp_path):
    if host.backend.get_hostname() != "mol-sc-ctl":
        pytest.skip("runs once, from the controller")
    router = f"http://{address(node(host, 'mol-sc-ctl'))}:8000"
    p0, p1 = node(host, "mol-sc-p0"), node(host, "mol-sc-p1")
    url = {n: f"http://{address(node(host, n))}:{8200 if 'd0' in n else 8100}" for n in ("mol-sc-p0", "mol-sc-p1",
                                                                                           "mol-sc-d0")}
    assert router_workers(router) == {"prefill": [url["mol-sc-p0"]], "decode": [url["mol-sc-d0"]]}
    before = original_starts(host)

    # Scale out: the spare joins prefill.
    load = site_under_load(router, tmp_path, "prefill", "scale-out")
    assert load.ok > 0
    assert p1.service("vllm-prefill-1").is_running
    assert router_workers(router) == {"prefill": sorted([url["mol-sc-p0"], url["mol-sc-p1"]]),
                                      "decode": [url["mol-sc-d0"]]}
    assert original_starts(host) == before

    # Scale in: the node moves to `retired`; it leaves the router, drains, and its files go.
    site_under_load(router, tmp_path, "retired", "scale-in")
    assert router_workers(router) == {"prefill": [url["mol-sc-p0"]], "decode": [url["mol-sc-d0"]]}
    assert not p1.file("/etc/systemd/system/vllm-prefill-1.service").exists
    assert not p1.file("/etc/vllm/vllm-prefill-1.env").exists
    assert p1.run("systemctl is-active vllm-prefill-1").stdout.strip() in ("inactive", "unknown")
    assert not p0.file("/etc/systemd/system/vllm-prefill-1.service").exists
    assert original_starts(host) == before
