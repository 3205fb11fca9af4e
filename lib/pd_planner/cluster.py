"""The validated, cluster-wide inputs every planning step reads.

Built once by build.py from the spec after validation; frozen so no step
can change what another step sees.
"""

from __future__ import annotations

from dataclasses import dataclass

POOLS = ("prefill", "decode")
ROLE_GROUPS = ("prefill", "decode", "router", "monitoring")


@dataclass(frozen=True)
class Cluster:
    version: tuple[int, int, int]  # parsed pd_vllm_version
    vllm: dict  # {"version": str, "install_root": str}, as the plan shows it
    connector: str
    connector_info: dict  # catalog.CONNECTORS entry of the connector
    network: object  # netaddr.IPNetwork of pd_cluster_cidr
    model: dict  # normalized pd_model
    model_profile: dict | None  # catalog.MODEL_PROFILES entry with its name, or None
    router: dict  # normalized pd_router
    monitoring: dict  # normalized pd_monitoring
    groups: dict  # group -> [host]
    hosts: dict  # host -> normalized HOST_OPTIONS
    addresses: dict  # host -> cluster address
    profiles: dict  # prefill/decode host -> GPU profile (catalog entry + name, gpus)
    pools: dict  # pool name -> validated pd_pool
    worker_env: dict
    ucx_tls: str | None
    kv_shared_storage_path: str | None

    def all_hosts(self) -> list[str]:
        return list(dict.fromkeys(h for g in ROLE_GROUPS for h in self.groups[g]))
