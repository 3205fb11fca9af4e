"""The firewall role (roles/firewall): every port the plan claims has a scope,
the role's rendered rulesets pass the real `nft -c -f` (nftables from Debian,
as on the hosts), and a rendered ruleset, loaded by the real nft into a
network namespace of this machine, lets through exactly what it says: real
TCP connections from sources inside and outside the cluster, admin and other
networks (root; network namespaces, nothing on the host's own network)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid

import pytest
from conftest import ROOT, inventory_spec, local_play
from pd_planner import PlanError, build_plan, firewall

pytestmark = pytest.mark.playbook

NFT = shutil.which("nft") or str(ROOT / ".cache" / "nftables" / "usr" / "sbin" / "nft")
ADMIN = ["192.168.50.0/24", "2001:db8:50::/64"]


@pytest.fixture(scope="module")
def plans() -> dict:
    return {name: build_plan(inventory_spec(ROOT / "inventories" / name)) for name in ("lab", "gb200")}


@pytest.mark.parametrize("name", ["lab", "gb200"])
def test_every_claimed_port_gets_its_scope(plans, name):
    plan = plans[name]
    for host, entry in plan["hosts"].items():
        rules = firewall.host_rules(plan, host, ADMIN, [])
        covered = set()
        for scope in firewall.SCOPES:
            for item in rules["ports"][scope]:
                low, _, high = item.partition("-")
                covered |= set(range(int(low), int(high or low) + 1))
        assert covered == {p["port"] for p in entry["ports"]}, host
        assert rules["sources"]["cluster"]["ip"] == [plan["cluster_cidr"]]
        # Prometheus and Grafana: the admin networks only, never the cluster network.
        assert rules["sources"]["admin"] == {"ip": ["192.168.50.0/24"], "ip6": ["2001:db8:50::/64"]}
        owners = {p["owner"]: firewall.scope_of(p["owner"]) for p in entry["ports"]}
        assert all(scope == "admin" for owner, scope in owners.items() if owner in ("prometheus", "grafana"))
        assert all(scope == "cluster" for owner, scope in owners.items()
                   if owner.endswith((" http", " nixl side channel", " data-parallel rpc")))


def test_unknown_listeners_and_bad_networks_are_refused(plans):
    with pytest.raises(ValueError, match="no firewall scope"):
        firewall.scope_of("new exporter")
    plan = plans["gb200"]
    for admin, fragment in (("10.0.0.0/8", "firewall_admin_networks is '10.0.0.0/8'"),
                            (["10.0.0.300/8"], "firewall_admin_networks has '10.0.0.300/8'")):
        with pytest.raises(PlanError, match=fragment):
            firewall.host_rules(plan, "cpu-ctl-01", admin, [])
    with pytest.raises(PlanError, match=r"firewall_allow\[0\].proto is 'sctp'; valid: tcp, udp"):
        firewall.host_rules(plan, "cpu-ctl-01", [], [], [{"port": 9100, "proto": "sctp"}])


PLAY = """
- name: Render the firewall of every host of a plan
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Render
      ansible.builtin.include_role:
        name: firewall
        tasks_from: files.yml
      vars:
        firewall_render_host: "{{ _host }}"
        firewall_render_root: "{{ out }}/{{ _host }}"
      loop: "{{ pd_plan.hosts | list }}"
      loop_control:
        loop_var: _host
"""


def render(tmp_path, plan: dict, **variables) -> dict:
    out = tmp_path / "render"
    result = local_play(tmp_path, PLAY, {"pd_plan": plan, "out": str(out), **variables})
    assert result.returncode == 0, result.stdout + result.stderr
    return {host: (out / host / "etc" / "pd-firewall" / "ruleset.nft").read_text() for host in plan["hosts"]}


@pytest.fixture(scope="module")
def nft() -> str:
    if not os.access(NFT, os.X_OK):
        pytest.fail("nft not found: apt-get install nftables (or unpack it under .cache/nftables)")
    return NFT


@pytest.mark.parametrize("name", ["lab", "gb200"])
def test_rendered_rulesets_pass_nft_check(plans, name, tmp_path, nft):
    rulesets = render(tmp_path, plans[name], firewall_admin_networks=ADMIN,
                      firewall_client_networks=["198.51.100.0/24"],
                      firewall_allow=[{"port": "9100-9101", "sources": ["10.9.0.0/24"], "comment": "node exporter"}])
    for host, text in rulesets.items():
        path = tmp_path / f"{host}.nft"
        path.write_text(text)
        result = subprocess.run([nft, "-c", "-f", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, f"{host}: {result.stderr}\n{text}"
        assert "tcp dport 22 accept" in text
        assert "policy drop" in text
    # The unit that loads it: root with CAP_NET_ADMIN only, scored like every unit (test_hardening.py).
    unit = "pd-firewall.service"
    for host in rulesets:
        root = tmp_path / "render" / host
        assert (root / "etc/systemd/system" / unit).is_file()
        result = subprocess.run(["systemd-analyze", "security", "--offline=true", f"--root={root}", "--no-pager", unit],
                                capture_output=True, text=True, check=False)
        found = re.search(r"Overall exposure level for pd-firewall.service: (\d+\.\d+)", result.stdout)
        assert found and float(found.group(1)) <= 3.5, f"{host}: {result.stdout[-300:]}{result.stderr}"
    # A ruleset nft refuses is caught by the same check (what the role's validate: runs).
    broken = tmp_path / "broken.nft"
    broken.write_text(next(iter(rulesets.values())).replace("policy drop", "policy dorp"))
    assert subprocess.run([nft, "-c", "-f", str(broken)], capture_output=True).returncode != 0


# --- the ruleset in a network namespace, with real connections ---------------
SERVER = """
import socket, sys, threading, time
for port in map(int, sys.argv[1:]):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16)
    threading.Thread(target=lambda s=s: [c.close() for c, _ in iter(s.accept, None)], daemon=True).start()
print("listening", flush=True)
time.sleep(600)
"""
CLIENT = """
import socket, sys
source, target, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(); s.settimeout(1.5); s.bind((source, 0))
try:
    s.connect((target, port)); print("open")
except OSError as exc:
    print("blocked", type(exc).__name__)
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def netns(nft):
    """Two namespaces joined by a veth pair: srv (the host under test) and cli (every source)."""
    if os.geteuid() != 0:
        pytest.fail("the namespace test needs root (ip netns, nft)")
    tag = uuid.uuid4().hex[:6]
    srv, cli = f"pdfw-s-{tag}", f"pdfw-c-{tag}"
    procs = []
    try:
        for ns in (srv, cli):
            _ip("netns", "add", ns)
        _ip("link", "add", f"vs{tag}", "netns", srv, "type", "veth", "peer", "name", f"vc{tag}", "netns", cli)
        for ns, dev in ((srv, f"vs{tag}"), (cli, f"vc{tag}")):
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")

        def setup(server_addresses, client_addresses, ruleset: str, ports: list[int]):
            for address in server_addresses:
                _ip("-n", srv, "addr", "add", address, "dev", f"vs{tag}")
            for address in client_addresses:
                _ip("-n", cli, "addr", "add", address, "dev", f"vc{tag}")
            path = f"/tmp/{srv}.nft"
            with open(path, "w") as handle:
                handle.write(ruleset)
            subprocess.run(["ip", "netns", "exec", srv, nft, "-f", path], check=True)
            os.unlink(path)
            proc = subprocess.Popen(["ip", "netns", "exec", srv, sys.executable, "-c", SERVER, *map(str, ports)],
                                    stdout=subprocess.PIPE, text=True)
            procs.append(proc)
            assert proc.stdout.readline().strip() == "listening"
            time.sleep(1)  # IPv4 addresses are usable at once; give the veth a moment

        def connect(source: str, target: str, port: int) -> str:
            out = subprocess.run(["ip", "netns", "exec", cli, sys.executable, "-c", CLIENT, source, target, str(port)],
                                 capture_output=True, text=True, timeout=30).stdout
            return out.split()[0] if out else "error"

        yield setup, connect
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        for ns in (srv, cli):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_a_gb200_tray_takes_worker_ports_from_the_cluster_only(plans, tmp_path, netns):
    """gb200-tray-01 (prefill-0 leader, 10.20.0.11): HTTP 8100, NIXL 5600-5603,
    DP RPC 29550 from the cluster network; any port from the other serving
    trays; nothing else but SSH from outside."""
    setup, connect = netns
    rulesets = render(tmp_path, plans["gb200"], firewall_admin_networks=["192.168.50.0/24"])
    setup(["10.20.0.11/24", "203.0.113.1/24", "192.168.50.1/24"],
          ["10.20.0.5/24", "10.20.0.13/24", "203.0.113.9/24", "192.168.50.7/24"],
          rulesets["gb200-tray-01"], [22, 8100, 5601, 29550, 9400, 41000])
    router, peer, outside, admin = "10.20.0.5", "10.20.0.13", "203.0.113.9", "192.168.50.7"
    tray = "10.20.0.11"
    seen = {(src, port): connect(src, tray if src != outside and src != admin else
                                 ("203.0.113.1" if src == outside else "192.168.50.1"), port)
            for src in (router, peer, outside, admin) for port in (22, 8100, 5601, 29550, 9400, 41000)}
    expected = {
        (router, 22): "open", (router, 8100): "open", (router, 5601): "open", (router, 29550): "open",
        (router, 9400): "open", (router, 41000): "blocked",
        (peer, 22): "open", (peer, 8100): "open", (peer, 5601): "open", (peer, 29550): "open",
        (peer, 9400): "open", (peer, 41000): "open",
        (outside, 22): "open", (outside, 8100): "blocked", (outside, 5601): "blocked",
        (outside, 29550): "blocked", (outside, 9400): "blocked", (outside, 41000): "blocked",
        (admin, 22): "open", (admin, 8100): "blocked", (admin, 5601): "blocked",
        (admin, 29550): "blocked", (admin, 9400): "blocked", (admin, 41000): "blocked",
    }
    assert seen == expected


def test_the_monitoring_host_takes_prometheus_and_grafana_from_admins_only(plans, tmp_path, netns):
    """cpu-ctl-01 (router + monitoring, 10.20.0.5): Prometheus 9090 and Grafana
    3000 from the admin network only, the router API 8000 from the cluster and
    client networks, its metrics 29000 from the cluster."""
    setup, connect = netns
    rulesets = render(tmp_path, plans["gb200"], firewall_admin_networks=["192.168.50.0/24"],
                      firewall_client_networks=["198.51.100.0/24"])
    setup(["10.20.0.5/24", "192.168.50.1/24", "198.51.100.1/24", "203.0.113.1/24"],
          ["10.20.0.11/24", "192.168.50.7/24", "198.51.100.9/24", "203.0.113.9/24"],
          rulesets["cpu-ctl-01"], [22, 3000, 9090, 8000, 29000])
    targets = {"10.20.0.11": "10.20.0.5", "192.168.50.7": "192.168.50.1", "198.51.100.9": "198.51.100.1",
               "203.0.113.9": "203.0.113.1"}
    seen = {(src, port): connect(src, target, port) for src, target in targets.items()
            for port in (22, 3000, 9090, 8000, 29000)}
    open_ = {("10.20.0.11", 22), ("10.20.0.11", 8000), ("10.20.0.11", 29000),
             ("192.168.50.7", 22), ("192.168.50.7", 3000), ("192.168.50.7", 9090),
             ("198.51.100.9", 22), ("198.51.100.9", 8000),
             ("203.0.113.9", 22)}
    assert {key for key, state in seen.items() if state == "open"} == open_, seen
    assert all(state in ("open", "blocked") for state in seen.values()), seen
