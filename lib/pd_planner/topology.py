"""Topology: IMEX (NVLink) domains and the per-host index of the plan:
address, groups, GPU profile, vLLM install, IMEX domain, units and ports."""

from __future__ import annotations

from .cluster import ROLE_GROUPS, Cluster
from .vllm_args import vllm_host


def imex_domains(cluster: Cluster) -> list:
    """Worker hosts whose platform has IMEX, grouped by pd_imex_domain."""
    domains: dict[str, list[str]] = {}
    for host in cluster.groups["prefill"] + cluster.groups["decode"]:
        if cluster.profiles[host]["imex"]:
            domains.setdefault(cluster.hosts[host]["imex_domain"] or "default", []).append(host)
    return [
        {"name": name, "hosts": members, "addresses": [cluster.addresses[h] for h in members]}
        for name, members in sorted(domains.items())
    ]


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
    return index
