"""Prometheus scrape jobs: each target carries the labels dashboards and
rules group by."""

from __future__ import annotations

from .cluster import POOLS, Cluster


def scrape(cluster: Cluster, instances: list[dict], router_plan: dict) -> dict:
    """Prometheus jobs: each target carries the labels dashboards and rules
    group by. `instance` is the plan's instance name (stable across scaling),
    not the address Prometheus would default to."""
    monitoring, addresses = cluster.monitoring, cluster.addresses
    jobs = []
    for pool_name in POOLS:
        targets = []
        for inst in instances:
            if inst["role"] != pool_name:
                continue
            leader = inst["nodes"][0]
            targets.append({
                "target": f"{leader['address']}:{leader['ports']['http']}",
                "labels": {
                    "pool": pool_name,
                    "instance": inst["name"],
                    "kv_rank": str(inst["kv_rank"]),
                    "host": leader["host"],
                    "gpus": str(inst["gpus_total"]),
                },
            })
        jobs.append({"job_name": f"vllm-{pool_name}", "metrics_path": "/metrics", "targets": targets})
    jobs.append({
        "job_name": "vllm-router",
        "metrics_path": "/metrics",
        "targets": [
            {"target": f"{h['address']}:{router_plan['settings']['metrics_port']}",
             "labels": {"pool": "router", "instance": f"router-{i}", "host": h["host"]}}
            for i, h in enumerate(router_plan["hosts"])
        ],
    })
    # GPU metrics: one dcgm-exporter per GPU node (lab nodes have no GPU).
    dcgm = []
    for pool_name in POOLS:
        for host in cluster.groups[pool_name]:
            if cluster.profiles[host]["device"] != "cuda":
                continue
            dcgm.append({"target": f"{addresses[host]}:{monitoring['dcgm_exporter_port']}",
                         "labels": {"pool": pool_name, "instance": host, "host": host}})
    jobs.append({"job_name": "dcgm", "metrics_path": "/metrics", "targets": dcgm})
    prom = []
    for host in cluster.groups["monitoring"]:
        prom.append({"target": f"{addresses[host]}:{monitoring['prometheus_port']}",
                     "labels": {"pool": "monitoring", "instance": host, "host": host}})
    jobs.append({"job_name": "prometheus", "metrics_path": "/metrics", "targets": prom})
    # Per-pool GPU counts for the tokens-per-GPU rules (Prometheus cannot
    # read a number out of a label).
    gpus = {pool_name: sum(i["gpus_total"] for i in instances if i["role"] == pool_name) for pool_name in POOLS}
    return {"jobs": jobs, "monitoring": monitoring, "pool_gpus": gpus}
