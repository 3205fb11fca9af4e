"""Topology: IMEX (NVLink) domains and the per-host index of the plan:
address, groups, GPU profile, vLLM install, IMEX domain, units and ports."""

from __future__ import annotations

import netaddr

from .cluster import ROLE_GROUPS, Cluster
from .errors import PlanError
from .vllm_args import vllm_host


def _declared_domains(raw: object) -> dict[str, list[str]] | None:
    """pd_imex_domains: {domain name: [address of every tray of the NVLink
    domain, serving or not]}; None when unset."""
    if raw in (None, {}):
        return None
    valid = "a mapping of domain name to the list of every tray's IPv4 address in that NVLink domain (the rack)"
    if not isinstance(raw, dict):
        raise PlanError(f"pd_imex_domains is {type(raw).__name__}; valid: {valid}")
    domains: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for name, addresses in raw.items():
        if not isinstance(name, str) or not name:
            raise PlanError(f"pd_imex_domains has the key {name!r}; valid: {valid}")
        if not isinstance(addresses, list) or not addresses:
            raise PlanError(f"pd_imex_domains.{name} is {addresses!r}; valid: a non-empty list of every tray's "
                            "IPv4 address in the domain")
        domains[name] = []
        for address in addresses:
            try:
                text = str(netaddr.IPAddress(str(address), version=4))
            except (netaddr.AddrFormatError, ValueError):
                raise PlanError(f"pd_imex_domains.{name} lists {address!r}; valid: IPv4 addresses") from None
            if text in seen:
                raise PlanError(f"pd_imex_domains lists {text} in {seen[text]} and {name}; a tray belongs to "
                                "one NVLink domain")
            seen[text] = name
            domains[name].append(text)
    return domains


def imex_domains(cluster: Cluster, declared_raw: object, warnings: list) -> list:
    """IMEX domains of the worker hosts whose platform has IMEX.

    With pd_imex_domains the node list of a domain is what the inventory
    declares for the rack (every tray, serving or not), so adding a tray to a
    pool changes no nodes_config.cfg and restarts no nvidia-imex. Without it
    the list is the serving trays of each pd_imex_domain, with a warning."""
    declared = _declared_domains(declared_raw)
    members: dict[str, list[str]] = {}
    for host in dict.fromkeys(cluster.groups["prefill"] + cluster.groups["decode"]):
        if cluster.profiles[host]["imex"]:
            members.setdefault(cluster.hosts[host]["imex_domain"] or "default", []).append(host)
    if not members:
        return []
    if declared is None:
        warnings.append(
            "pd_imex_domains is not set: each IMEX node list is only the serving trays of its pd_imex_domain, "
            "so adding a tray rewrites /etc/nvidia-imex/nodes_config.cfg on every tray of the domain and "
            "restarts nvidia-imex under running instances. Declare every tray of the rack: "
            "pd_imex_domains: {<pd_imex_domain>: [every tray's address]}")
        return [
            {"name": name, "hosts": hosts, "addresses": [cluster.addresses[h] for h in hosts]}
            for name, hosts in sorted(members.items())
        ]
    for name, hosts in members.items():
        if name not in declared:
            if not cluster.hosts[hosts[0]]["imex_domain"]:
                raise PlanError(
                    f"host {hosts[0]} sets no pd_imex_domain; valid: one of {', '.join(sorted(declared))} "
                    "(the pd_imex_domains entry that lists its address)")
            raise PlanError(
                f"pd_imex_domain {name} of host {hosts[0]} is not in pd_imex_domains; valid: "
                f"{', '.join(sorted(declared))} (or declare {name} with every tray of its rack)")
        for host in hosts:
            if cluster.addresses[host] not in declared[name]:
                raise PlanError(
                    f"host {host} ({cluster.addresses[host]}) is not listed in pd_imex_domains.{name}; "
                    f"list every tray of the rack there (valid addresses now: {', '.join(declared[name])})")
    return [
        {"name": name, "hosts": members.get(name, []), "addresses": addresses}
        for name, addresses in sorted(declared.items()) if name in members
    ]


def check_instances_in_one_domain(cluster: Cluster, instances: list[dict], imex: list) -> None:
    """NVLink (and so IMEX) spans one domain: an instance whose trays lie in
    two IMEX domains could not reach its own GPUs' memory across them."""
    domain_of = {host: domain["name"] for domain in imex for host in domain["hosts"]}
    for inst in instances:
        hosts = [node["host"] for node in inst["nodes"]]
        domains = {domain_of[h] for h in hosts if h in domain_of}
        if len(domains) > 1:
            where = ", ".join(f"{h} in {domain_of.get(h)}" for h in hosts)
            raise PlanError(
                f"instance {inst['name']} spans trays of two IMEX domains ({where}); an instance's trays must "
                "share one NVLink domain: give them one pd_imex_domain, or keep the pool's trays of one rack "
                "together in its group")


def host_index(cluster: Cluster, instances: list[dict], port_owners: dict, imex: list) -> dict:
    profiles, vllm = cluster.profiles, cluster.vllm
    index: dict[str, dict] = {}
    domain_of = {host: domain["name"] for domain in imex for host in domain["hosts"]}
    workers = set(cluster.groups["prefill"] + cluster.groups["decode"])
    for host in cluster.all_hosts():
        index[host] = {
            "address": cluster.addresses[host],
            "groups": [g for g in ROLE_GROUPS if host in cluster.groups[g]],
            "gpu_profile": profiles[host]["name"] if host in profiles else None,
            "device": profiles[host]["device"] if host in profiles else None,
            "gpus": profiles[host]["gpus"] if host in profiles else 0,
            "architecture": profiles[host]["architecture"] if host in profiles else None,
            "units": [],
            "imex_domain": domain_of.get(host),
            "vllm": (vllm_host(profiles[host]["device"], vllm["version"], vllm["install_root"])
                     if host in workers else None),
            # Every port the deployment listens on here, for preflight.
            "ports": [{"port": port, **claim} for port, claim in sorted(port_owners.get(host, {}).items())],
        }
    for inst in instances:
        for node in inst["nodes"]:
            index[node["host"]]["units"].append(inst["unit"])
            if node["leader"] and "announce" in inst:  # router discovery zmq
                index[node["host"]]["units"].append(inst["announce"]["unit"])
    return index
