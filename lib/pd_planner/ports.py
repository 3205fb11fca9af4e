"""Ports: the number of every port a unit listens on, and one claim pass
over the finished plan that rejects two listeners on one host and port.

Worker ports come from pd_pool (or catalog.DEFAULT_PORTS), router ports from
pd_router, Prometheus/Grafana/dcgm-exporter ports from pd_monitoring.
"""

from __future__ import annotations

from . import catalog
from .cluster import POOLS, Cluster
from .errors import PlanError


def node_ports(pool_name: str, pool: dict, host_slot: int, position: int, start: int, dp_local: int) -> dict:
    """Ports of one node of an instance packed into `host_slot` of its host.

    Packed instances step by one (http, dp_rpc), by data_parallel_size (NIXL
    side channel: each DP rank listens on base + its global DP rank) or by
    their GPU count (P2pNccl kv_port). Only the leader (position 0) serves HTTP.
    """
    defaults = catalog.DEFAULT_PORTS[pool_name]
    http = pool["http_port"] or defaults["http"]
    side = pool["nixl_side_channel_port"] or defaults["nixl_side_channel"]
    rpc = pool["dp_rpc_port"] or defaults["dp_rpc"]
    kv = pool["kv_port"] or defaults["kv"]
    side_base = side + host_slot * pool["data_parallel_size"]
    return {
        "http": http + host_slot if position == 0 else None,
        "dp_rpc": rpc + host_slot,
        "nixl_side_channel_base": side_base,
        "nixl_side_channel": [side_base + start, side_base + start + dp_local - 1],
        "kv": kv + host_slot * pool["gpus_per_instance"],
    }


def _claim(ports: dict, host: str, port: int, owner: str, unit: str) -> None:
    """Record that `unit` listens on `port` of `host`; a second claim is a collision."""
    if not 1 <= port <= 65535:
        raise PlanError(f"host {host}: {owner} would use port {port}, outside 1-65535")
    other = ports.setdefault(host, {}).get(port)
    if other is not None:
        raise PlanError(
            f"port collision on host {host}: port {port} is used by both {other['owner']} and {owner}; "
            "move one of them (pd_pool http_port / nixl_side_channel_port / dp_rpc_port, pd_router, pd_monitoring)"
        )
    ports[host][port] = {"owner": owner, "unit": unit}


def claim_all(cluster: Cluster, instances: list[dict], router_plan: dict) -> dict[str, dict[int, dict]]:
    """host -> port -> {owner, unit} for every listener of the plan."""
    owners: dict[str, dict[int, dict]] = {}
    for inst in instances:
        for node in inst["nodes"]:
            owner, unit, host, ports = inst["name"], inst["unit"], node["host"], node["ports"]
            if node["leader"]:
                _claim(owners, host, ports["http"], f"{owner} http", unit)
            if inst["parallelism"]["data_parallel_size"] > 1 and node["leader"]:
                _claim(owners, host, ports["dp_rpc"], f"{owner} data-parallel rpc", unit)
            if cluster.connector_info["side_channel"]:
                low, high = ports["nixl_side_channel"]
                for port in range(low, high + 1):
                    _claim(owners, host, port, f"{owner} nixl side channel", unit)
            if cluster.connector == "P2pNcclConnector":
                for port in range(ports["kv"], ports["kv"] + len(node["gpus"])):
                    _claim(owners, host, port, f"{owner} p2p nccl kv_port", unit)
    router = cluster.router
    for entry in router_plan["hosts"]:
        host = entry["host"]
        if router_plan["mode"] == "discovery":
            _claim(owners, host, router["discovery_port"], "router discovery", "vllm-router")
        _claim(owners, host, router["port"], "router api", "vllm-router")
        _claim(owners, host, router["metrics_port"], "router metrics", "vllm-router")
    monitoring = cluster.monitoring
    for pool_name in POOLS:
        for host in cluster.groups[pool_name]:
            if cluster.profiles[host]["device"] == "cuda":
                _claim(owners, host, monitoring["dcgm_exporter_port"], "dcgm-exporter", "dcgm-exporter")
    for host in cluster.groups["monitoring"]:
        _claim(owners, host, monitoring["prometheus_port"], "prometheus", "prometheus")
        if monitoring["grafana_enabled"]:
            _claim(owners, host, monitoring["grafana_port"], "grafana", "grafana-server")
    return owners
