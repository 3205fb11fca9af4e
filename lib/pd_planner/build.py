"""The cluster planner: inventory spec in, deterministic deployment plan out.

build_plan composes one module per concern, in this order:
  validate.py    settings, groups, hosts, pools: new normalized values, held
                 frozen in cluster.py's Cluster
  vllm_args.py   rules by vLLM release (parser and engine-start rules, vllm_rules.py);
                 kv-transfer-config, serve_args, env, launcher
  placement.py   hosts and GPU/core sets, instance names, kv and DP ranks
  capacity.py    per-GPU memory fit
  ports.py       every port number, and the one collision check
  routing.py     vllm-router argv, URLs and worker set
  scrape.py      Prometheus jobs
  topology.py    IMEX domains and the per-host index
  sizing.py      prefill:decode GPU ratio against pd_workload

`build_plan(spec)` is pure: same spec, same plan, byte for byte. It raises
PlanError on input that could not be deployed, before anything touches a host.

spec = {
  "vllm_version": "0.33.0", "kv_connector": "NixlConnector",
  "model": {...MODEL_OPTIONS}, "cluster_cidr": "10.20.0.0/22",
  "router": {...ROUTER_OPTIONS}, "monitoring": {...MONITORING_OPTIONS},
  "worker_env": {...}, "ucx_tls": None, "kv_shared_storage_path": None, "vllm_install_root": None,
  "pools": {"prefill": {...POOL_OPTIONS}, "decode": {...}},
  "groups": {"prefill": [host, ...], "decode": [...], "router": [...], "monitoring": [...]},
  "hosts": {host: {...HOST_OPTIONS}},
}
"""

from __future__ import annotations

from . import placement, ports, rayserve, routing, scrape, sizing, topology, validate
from .cluster import POOLS, Cluster
from .network import cluster_network, pick_address
from .vllm_args import check_runtime_rules, check_version_and_connector

SCHEMA_VERSION = 1


def validated_cluster(spec: dict, warnings: list) -> Cluster:
    """Every input checked and normalized, in the order errors are reported."""
    validate.check_settings(spec)
    version, connector, connector_info = check_version_and_connector(spec, warnings)
    groups = validate.check_groups(spec)
    network = cluster_network(spec.get("cluster_cidr"))
    model, model_profile = validate.check_model(spec.get("model"))
    router = validate.check_router(spec.get("router"))
    monitoring = validate.check_monitoring(spec.get("monitoring"))
    all_hosts = list(dict.fromkeys(h for g in ("prefill", "decode", "router", "monitoring") for h in groups[g]))
    hosts = validate.check_hosts(spec.get("hosts"), all_hosts)
    addresses = {h: pick_address(h, hosts[h], network) for h in all_hosts}
    validate.check_cluster_wide(spec, groups, router, addresses, network)
    vllm = {
        "version": str(spec["vllm_version"]),
        "install_root": validate.check_install_root(spec.get("vllm_install_root")),
    }
    worker_env = validate.check_worker_env(spec.get("worker_env"))
    pools, profiles = {}, {}
    for pool_name in POOLS:
        raw = (spec.get("pools") or {}).get(pool_name)
        pools[pool_name] = validate.check_pool(pool_name, raw, version, connector, model_profile, warnings)
        for host in groups[pool_name]:
            profiles[host] = validate.host_profile(host, hosts[host])
    return Cluster(
        version=version, vllm=vllm, connector=connector, connector_info=connector_info, network=network,
        model=model, model_profile=model_profile, router=router, monitoring=monitoring, groups=groups,
        hosts=hosts, addresses=addresses, profiles=profiles, pools=pools, worker_env=worker_env,
        ucx_tls=spec.get("ucx_tls"), kv_shared_storage_path=spec.get("kv_shared_storage_path"),
    )


def build_plan(spec: dict) -> dict:
    """Turn a normalized inventory spec into the deployment plan (see module doc)."""
    warnings: list[str] = []
    cluster = validated_cluster(spec, warnings)
    runtime_rules = check_runtime_rules(cluster, warnings)
    layouts = placement.choose_layouts(cluster, warnings)
    instances = placement.build_instances(cluster, layouts, warnings)
    router_plan = routing.router_plan(cluster, instances, warnings)
    routing.announcers(cluster, instances, router_plan)
    port_owners = ports.claim_all(cluster, instances, router_plan)
    imex = topology.imex_domains(cluster, spec.get("imex_domains"), warnings)
    topology.check_instances_in_one_domain(cluster, instances, imex)
    model_profile = cluster.model_profile
    plan = {
        "schema_version": SCHEMA_VERSION,
        "vllm_version": cluster.vllm["version"],
        "vllm": cluster.vllm,
        "connector": cluster.connector,
        # Engine-start rules checked, and the vLLM release they were read from.
        "runtime_rules": runtime_rules,
        "model": {
            **cluster.model,
            "capacity_profile": model_profile["name"] if model_profile else None,
            # On-disk size for preflight's free-space check (None: unknown model).
            "size_gb": round(model_profile["dense_gb"] + model_profile["experts_gb"], 3) if model_profile else None,
        },
        "cluster_cidr": str(cluster.network),
        "kv_parallel_size": sum(len(layouts[p]) for p in POOLS),
        "instances": instances,
        "router": router_plan,
        "scrape": scrape.scrape(cluster, instances, router_plan),
        "imex_domains": imex,
        # pd_workload against the pools' GPUs (sizing.py; null when unset).
        "sizing": sizing.plan_sizing(spec.get("workload"), instances, warnings),
        "hosts": topology.host_index(cluster, instances, port_owners, imex),
        "warnings": warnings,
    }
    # pd_serving.mode rayserve: Ray head/workers and the Serve config from the same pools.
    return rayserve.apply(spec, cluster, instances, plan, warnings)
