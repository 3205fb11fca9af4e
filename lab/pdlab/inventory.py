"""The lab's shape, read from inventories/lab (its one source of truth).

The committed inventory holds one host per pool (lab-prefill-0,
lab-decode-0) and the control host. `--prefill N --decode M` adds hosts
named and addressed after each pool's first one: index i gets the first
host's address + i and the core i pools further on, so every vLLM node keeps
its own core as long as the machine has enough. The added hosts go to
.lab/inventory/scale.yml, which Ansible merges after inventories/lab (so
they inherit its group_vars).

Shapes (`--shape`, `make lab SHAPE=...`): "default" is the above; "wide"
adds the overlay inventories/lab-wide (-i inventories/lab -i
inventories/lab-wide), whose hosts and pools make the prefill instance
data parallel over two nodes (leader and headless follower). A shape other
than the default lists its hosts itself: --prefill/--decode do not apply.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

from .shell import ENV, ROOT, STATE

INVENTORY = ROOT / "inventories" / "lab"
POOLS = ("prefill", "decode")
# Shape -> the overlay inventories added after inventories/lab.
SHAPES: dict[str, tuple[str, ...]] = {"default": (), "wide": ("lab-wide",)}


def shape_inventories(shape: str) -> list:
    """inventories/lab and the shape's overlays, in the order Ansible merges them."""
    if shape not in SHAPES:
        raise LabInventoryError(f"lab shape {shape!r} is unknown; valid: {', '.join(SHAPES)}")
    return [INVENTORY, *(ROOT / "inventories" / overlay for overlay in SHAPES[shape])]


class LabInventoryError(SystemExit):
    """inventories/lab or the requested shape cannot make a lab."""


@dataclass(frozen=True)
class Node:
    name: str
    group: str  # "prefill", "decode" or "ctl" (router and monitoring)
    address: str
    cores: tuple[int, ...] | None = None
    published: tuple[int, ...] = ()  # ports published on 127.0.0.1


@dataclass(frozen=True)
class Lab:
    subnet: ipaddress.IPv4Network
    ctl: Node
    first: dict[str, Node]  # pool -> its committed host (index 0)
    router_port: int
    prometheus_port: int
    model: str  # pd_model.served_name
    model_dir: str  # under .lab/model-src, mounted on the nodes at /srv/model-src
    shape: str = "default"
    # A shape's own pool hosts in inventory order (every pool host of the
    # merged inventories); empty for the default shape, which generates them.
    fixed: tuple[Node, ...] = ()

    @property
    def gateway(self) -> str:
        return str(next(self.subnet.hosts()))

    def pool_node(self, pool: str, index: int, cpus: int | None = None) -> Node:
        first = self.first[pool]
        cpus = cpus or os.cpu_count() or 1
        address = ipaddress.ip_address(first.address) + index
        if address not in self.subnet or address in (self.subnet.network_address, self.subnet.broadcast_address):
            raise LabInventoryError(f"lab shape: {pool} node {index} would get {address}, outside the lab network "
                                    f"{self.subnet} (pd_cluster_cidr in {INVENTORY})")
        cores = tuple((core + len(POOLS) * index) % cpus for core in first.cores or (0,))
        return Node(f"{first.name[:-1]}{index}", pool, str(address), cores)

    def hosts(self, prefill: int, decode: int, cpus: int | None = None) -> dict[str, Node]:
        """Name -> Node for the requested shape, control host first."""
        nodes = [self.ctl]
        if self.fixed:
            if (prefill, decode) != (1, 1):
                raise LabInventoryError(f"lab shape {self.shape} lists its own hosts: --prefill/--decode "
                                        f"(PREFILL/DECODE) do not apply to it; got {prefill} and {decode}")
            nodes += list(self.fixed)
        for pool, count in zip(POOLS, (0, 0) if self.fixed else (prefill, decode), strict=True):
            nodes += [self.pool_node(pool, i, cpus) for i in range(count)]
        taken: dict[str, str] = {}
        for node in nodes:
            if node.address in taken:
                raise LabInventoryError(f"lab shape --prefill {prefill} --decode {decode}: {node.name} would get "
                                        f"{node.address}, already {taken[node.address]}'s; use fewer nodes")
            taken[node.address] = node.name
        return {node.name: node for node in nodes}

    def node(self, name: str) -> Node:
        """The Node of any lab vLLM node name, e.g. lab-prefill-3."""
        for node in self.fixed:
            if node.name == name:
                return node
        for pool, first in self.first.items():
            index = name.removeprefix(first.name[:-1])
            if index != name and index.isdigit():
                return self.pool_node(pool, int(index))
        raise LabInventoryError(f"{name} is not a lab node name (valid: "
                                + ", ".join(f"{f.name[:-1]}N" for f in self.first.values()) + ")")

    def committed(self) -> set[str]:
        return {self.ctl.name, *(node.name for node in self.first.values()), *(node.name for node in self.fixed)}


def from_inventory(groups: dict[str, list[str]], hostvars: dict[str, dict], shape: str = "default") -> Lab:
    """A Lab from Ansible's merged view of inventories/lab (and the shape's overlays)."""
    def only(group: str) -> str:
        hosts = groups.get(group, [])
        if shape != "default" and group in POOLS and hosts:
            return hosts[0]
        if len(hosts) != 1:
            raise LabInventoryError(f"{INVENTORY}: group {group} must hold exactly one host (more are generated by "
                                    f"--prefill/--decode), it holds {hosts}")
        return hosts[0]

    def address(host: str) -> str:
        value = hostvars.get(host, {}).get("pd_address")
        if not value:
            raise LabInventoryError(f"{INVENTORY}: host {host} has no pd_address")
        return value

    ctl = only("router")
    if only("monitoring") != ctl:
        raise LabInventoryError(f"{INVENTORY}: router and monitoring must be one host (the lab's control node)")
    first = {}
    for pool in POOLS:
        host = only(pool)
        if not re.fullmatch(r".+-0", host):
            raise LabInventoryError(f"{INVENTORY}: the {pool} host must be named <prefix>-0, "
                                    f"the generated ones are <prefix>-1, ...; got {host}")
        first[pool] = Node(host, pool, address(host), tuple(hostvars[host].get("pd_cpu_cores") or ()) or None)
    ctlvars = hostvars.get(ctl, {})
    router_port = int(ctlvars["pd_router"]["port"])
    prometheus_port = int(ctlvars["pd_monitoring"]["prometheus_port"])
    subnet = ipaddress.ip_network(ctlvars["pd_cluster_cidr"])
    fixed = ()
    if shape != "default":
        fixed = tuple(Node(host, pool, address(host), tuple(hostvars[host].get("pd_cpu_cores") or ()) or None)
                      for pool in POOLS for host in groups.get(pool, []))
    lab = Lab(subnet, Node(ctl, "ctl", address(ctl), None, (router_port, prometheus_port)), first,
              router_port, prometheus_port, ctlvars["pd_model"]["served_name"],
              os.path.basename(ctlvars["model_weights_local_dir"]), shape, fixed)
    for node in (lab.ctl, *first.values(), *fixed):
        if ipaddress.ip_address(node.address) not in subnet:
            raise LabInventoryError(f"{INVENTORY}: {node.name}'s pd_address {node.address} is outside "
                                    f"pd_cluster_cidr {subnet}")
    return lab


@functools.cache
def load(shape: str = "default") -> Lab:
    """inventories/lab (and the shape's overlays) as ansible-inventory merges
    them (hosts.yml and group_vars)."""
    tool = shutil.which("ansible-inventory", path=os.path.dirname(sys.executable)) or "ansible-inventory"
    sources = [arg for path in shape_inventories(shape) for arg in ("-i", str(path))]
    out = subprocess.run([tool, *sources, "--list"], check=True, capture_output=True, text=True,
                         env=ENV, cwd=ROOT).stdout
    data = json.loads(out)
    groups = {name: body.get("hosts", []) for name, body in data.items() if name != "_meta"}
    return from_inventory(groups, data.get("_meta", {}).get("hostvars", {}), shape)


def scale_inventory(lab: Lab, prefill: int, decode: int, retiring: list[str] | None = None) -> dict | None:
    """The hosts a shape adds to inventories/lab, with nodes on their way out
    in `retired` for one run (they leave the router, drain and lose their
    units); None when the committed inventory is the shape."""
    extra = [node for name, node in lab.hosts(prefill, decode).items() if name not in lab.committed()]
    if not extra and not retiring:
        return None
    children: dict = {"prefill": {"hosts": {}}, "decode": {"hosts": {}}, "retired": {"hosts": {}}}
    for group, node in [(node.group, node) for node in extra] + [("retired", lab.node(n)) for n in retiring or []]:
        children[group]["hosts"][node.name] = {"pd_address": node.address, "pd_cpu_cores": list(node.cores or ())}
    return {"all": {"children": children}}


def inventory_args(prefill: int, decode: int, retiring: list[str] | None = None, shape: str = "default") -> list[str]:
    """ansible-playbook's -i arguments for a shape (writes or removes scale.yml)."""
    args = [arg for path in shape_inventories(shape) for arg in ("-i", str(path))]
    scale = STATE / "inventory" / "scale.yml"
    content = scale_inventory(load(shape), prefill, decode, retiring)
    if content:
        scale.parent.mkdir(parents=True, exist_ok=True)
        scale.write_text(json.dumps(content, indent=2) + "\n")
        args += ["-i", str(scale)]
    elif scale.exists():
        scale.unlink()
    return args
