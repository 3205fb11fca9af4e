"""The lab's shape as labctl derives it from inventories/lab: committed hosts
as the inventory has them, scale nodes on its address scheme, one clear error
for a shape or an inventory the lab cannot run."""

from __future__ import annotations

import copy
import ipaddress

import pytest
from conftest import ROOT, ansible_inventory
from pdlab import inventory


@pytest.fixture(scope="module")
def merged():
    return ansible_inventory(ROOT / "inventories" / "lab")


@pytest.fixture(scope="module")
def lab(merged):
    return inventory.from_inventory(*merged)


def test_the_default_shape_is_the_committed_inventory(lab, merged):
    groups, hostvars = merged
    hosts = lab.hosts(1, 1)
    assert set(hosts) == set(groups["prefill"] + groups["decode"] + groups["router"] + groups["monitoring"])
    for name, node in hosts.items():
        assert node.address == hostvars[name]["pd_address"]
        assert list(node.cores or []) == hostvars[name].get("pd_cpu_cores", [])
    assert inventory.scale_inventory(lab, 1, 1) is None


def test_the_network_and_published_ports_are_the_inventorys(lab, merged):
    _, hostvars = merged
    ctl = hostvars[lab.ctl.name]
    assert lab.subnet == ipaddress.ip_network(ctl["pd_cluster_cidr"])
    assert lab.gateway == str(lab.subnet.network_address + 1)
    assert lab.ctl.published == (ctl["pd_router"]["port"], ctl["pd_monitoring"]["prometheus_port"])
    assert lab.model == ctl["pd_model"]["served_name"]
    assert ctl["model_weights_local_dir"].endswith("/" + lab.model_dir)


def test_scale_nodes_follow_each_pools_first_host(lab):
    hosts = lab.hosts(3, 2, cpus=8)
    prefill0, decode0 = lab.first["prefill"], lab.first["decode"]
    added = {name: node for name, node in hosts.items() if name not in lab.committed()}
    assert sorted(added) == sorted([prefill0.name[:-1] + "1", prefill0.name[:-1] + "2", decode0.name[:-1] + "1"])
    for node in added.values():
        first = lab.first[node.group]
        index = int(node.name.rsplit("-", 1)[1])
        assert ipaddress.ip_address(node.address) == ipaddress.ip_address(first.address) + index
        assert ipaddress.ip_address(node.address) in lab.subnet
    # Every vLLM node has a core of its own while the machine has enough.
    cores = [node.cores for node in hosts.values() if node.cores]
    assert len(set(cores)) == len(cores) == 5
    # A leaving node is found again from its name alone.
    assert lab.node(prefill0.name[:-1] + "2") == lab.hosts(3, 2)[prefill0.name[:-1] + "2"]


def test_the_scale_inventory_holds_added_and_retiring_nodes(lab):
    prefix = lab.first["prefill"].name[:-1]
    content = inventory.scale_inventory(lab, 2, 1, retiring=[prefix + "2"])
    children = content["all"]["children"]
    added, leaving = lab.node(prefix + "1"), lab.node(prefix + "2")
    assert children["prefill"]["hosts"] == {added.name: {"pd_address": added.address,
                                                         "pd_cpu_cores": list(added.cores)}}
    assert children["decode"]["hosts"] == {}
    assert children["retired"]["hosts"] == {leaving.name: {"pd_address": leaving.address,
                                                           "pd_cpu_cores": list(leaving.cores)}}


def test_a_shape_that_reuses_an_address_is_refused(lab):
    prefill0, decode0 = lab.first["prefill"], lab.first["decode"]
    clash = int(ipaddress.ip_address(decode0.address)) - int(ipaddress.ip_address(prefill0.address))
    with pytest.raises(SystemExit, match=rf"--prefill {clash + 1} .*: {decode0.name} would get {decode0.address}, "
                                         rf"already {prefill0.name[:-1]}{clash}'s"):
        lab.hosts(clash + 1, 1)


def test_a_shape_that_leaves_the_network_is_refused(lab):
    room = int(lab.subnet.broadcast_address) - int(ipaddress.ip_address(lab.first["decode"].address))
    with pytest.raises(SystemExit, match=rf"decode node {room} would get .*outside the lab network {lab.subnet}"):
        lab.hosts(1, room + 1)


def test_an_unknown_node_name_is_refused(lab):
    with pytest.raises(SystemExit, match="lab-gpu-1 is not a lab node name"):
        lab.node("lab-gpu-1")


@pytest.mark.parametrize(("change", "message"), [
    (lambda g, h: g["prefill"].append("lab-prefill-9"), "group prefill must hold exactly one host"),
    (lambda g, h: g.update(monitoring=["lab-decode-0"]), "router and monitoring must be one host"),
    (lambda g, h: g.update(decode=["lab-decode-a"]), "decode host must be named <prefix>-0"),
    (lambda g, h: h["lab-ctl"].update(pd_cluster_cidr="10.1.0.0/24"), "outside pd_cluster_cidr 10.1.0.0/24"),
    (lambda g, h: h["lab-prefill-0"].pop("pd_address"), "host lab-prefill-0 has no pd_address"),
])
def test_an_inventory_the_lab_cannot_use_is_refused(merged, change, message):
    groups, hostvars = copy.deepcopy(merged)
    change(groups, hostvars)
    with pytest.raises(SystemExit, match=message):
        inventory.from_inventory(groups, hostvars)


def test_the_lab_follows_an_edited_inventory(merged):
    # Nothing is repeated in labctl: moved addresses, a renamed pool host and
    # other ports in inventories/lab are what the nodes get.
    groups, hostvars = copy.deepcopy(merged)
    groups["prefill"] = ["edge-p-0"]
    hostvars["edge-p-0"] = {**hostvars.pop("lab-prefill-0"), "pd_address": "10.89.60.101"}
    hostvars["lab-ctl"]["pd_router"] = {**hostvars["lab-ctl"]["pd_router"], "port": 8111}
    lab = inventory.from_inventory(groups, hostvars)
    hosts = lab.hosts(2, 1)
    assert [(n.name, n.address) for n in hosts.values() if n.group == "prefill"] == [
        ("edge-p-0", "10.89.60.101"), ("edge-p-1", "10.89.60.102")]
    assert lab.ctl.published[0] == lab.router_port == 8111


# --- make lab SHAPE=wide: inventories/lab plus inventories/lab-wide --------
@pytest.fixture(scope="module")
def wide():
    return inventory.load("wide")


def test_the_wide_shape_is_the_overlays_hosts(wide):
    hosts = wide.hosts(1, 1)
    assert [(n.name, n.group, n.address, n.cores) for n in hosts.values()] == [
        ("lab-ctl", "ctl", "10.89.60.5", None),
        ("lab-prefill-0", "prefill", "10.89.60.11", (0,)),
        ("lab-prefill-1", "prefill", "10.89.60.12", (0,)),
        ("lab-decode-0", "decode", "10.89.60.21", (1,)),
    ]
    assert wide.committed() == set(hosts)
    assert inventory.scale_inventory(wide, 1, 1) is None
    assert wide.node("lab-prefill-1").cores == (0,)


def test_the_wide_shape_takes_no_node_counts(wide):
    with pytest.raises(SystemExit, match="lab shape wide lists its own hosts"):
        wide.hosts(2, 1)


def test_leaving_the_wide_shape_retires_its_extra_node(lab):
    # make lab after make lab SHAPE=wide: lab-prefill-1 drains and goes.
    scale = inventory.scale_inventory(lab, 1, 1, retiring=["lab-prefill-1"])
    retired = scale["all"]["children"]["retired"]["hosts"]
    assert list(retired) == ["lab-prefill-1"] and retired["lab-prefill-1"]["pd_address"] == "10.89.60.12"


def test_an_unknown_shape_is_refused():
    with pytest.raises(SystemExit, match="lab shape 'tall' is unknown; valid: default, wide"):
        inventory.shape_inventories("tall")
