"""Placement: which hosts and GPU (or CPU core) sets each instance gets, its
name, kv rank, data-parallel ranks, and the instance entry of the plan.

Greedy in inventory order, so appending hosts only appends instances.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .capacity import capacity
from .cluster import POOLS, Cluster
from .errors import PlanError
from .ports import node_ports
from .vllm_args import kv_transfer_config, node_env, serve_args, vllm_host


@dataclass(frozen=True)
class Slot:
    """One instance to lay out: its identity and the (host, slot) of each node."""

    pool_name: str
    index: int
    name: str
    kv_rank: int
    kv_parallel_size: int
    placement: tuple[tuple[str, int], ...]


def slots(pool_name: str, pool: dict, hosts: list[str], profiles: dict) -> list[list[tuple[str, int]]]:
    """Every instance the pool's hosts can hold, in inventory order.

    Returns a list of instances, each a list of (host, slot) node placements.
    Greedy in inventory order, so appending hosts only appends instances.
    """
    need = pool["gpus_per_instance"]
    placements: list[list[tuple[str, int]]] = []
    span: list[str] = []
    for host in hosts:
        gpus = profiles[host]["gpus"]
        if need <= gpus:
            if gpus % need:
                raise PlanError(
                    f"pd_pool ({pool_name}).gpus_per_instance {need} neither divides nor is a multiple of "
                    f"the {gpus} GPUs of host {host}; valid sizes for it: "
                    f"{', '.join(str(d) for d in range(1, gpus + 1) if gpus % d == 0)} or a multiple of {gpus}"
                )
            placements.extend([[(host, slot)] for slot in range(gpus // need)])
            continue
        if need % gpus:
            raise PlanError(
                f"pd_pool ({pool_name}).gpus_per_instance {need} neither divides nor is a multiple of "
                f"the {gpus} GPUs of host {host}"
            )
        if span and profiles[span[0]]["gpus"] != gpus:
            raise PlanError(
                f"pool {pool_name}: an instance of {need} GPUs would span hosts {span[0]} "
                f"({profiles[span[0]]['gpus']} GPUs) and {host} ({gpus} GPUs); "
                "hosts spanned by one instance must have the same GPU count"
            )
        span.append(host)
        if len(span) * gpus == need:
            placements.append([(h, 0) for h in span])
            span = []
    return placements


def choose_layouts(cluster: Cluster, warnings: list) -> dict[str, list]:
    """The placements each pool uses: pd_pool.instances of them, or all."""
    profiles = cluster.profiles
    layouts = {}
    for pool_name in POOLS:
        pool = cluster.pools[pool_name]
        hosts_of_pool = cluster.groups[pool_name]
        placements = slots(pool_name, pool, hosts_of_pool, profiles)
        capacity_gpus = sum(profiles[h]["gpus"] for h in hosts_of_pool)
        if not placements:
            raise PlanError(
                f"pool {pool_name} has {capacity_gpus} GPUs on {len(hosts_of_pool)} host(s), fewer than "
                f"one instance of {pool['gpus_per_instance']} GPUs; add {pool_name} hosts or shrink gpus_per_instance"
            )
        wanted = pool["instances"]
        if wanted is not None and wanted > len(placements):
            raise PlanError(
                f"pd_pool ({pool_name}).instances is {wanted}, but its {len(hosts_of_pool)} host(s) with "
                f"{capacity_gpus} GPUs hold {len(placements)} instance(s) of {pool['gpus_per_instance']} GPUs; "
                f"add {pool_name} hosts or lower instances"
            )
        chosen = placements[: wanted if wanted is not None else len(placements)]
        used = {h for placement in chosen for h, _ in placement}
        idle = [h for h in hosts_of_pool if h not in used]
        if idle:
            warnings.append(f"pool {pool_name}: host(s) {', '.join(idle)} carry no instance")
        used_gpus = sum(profiles[h]["gpus"] for h in hosts_of_pool if h in used)
        leftover = used_gpus - len(chosen) * pool["gpus_per_instance"]
        if leftover:
            warnings.append(f"pool {pool_name}: {leftover} GPU(s) on used hosts stay idle")
        layouts[pool_name] = chosen
    return layouts


def name_and_rank(cluster: Cluster, layouts: dict) -> list[Slot]:
    """Every instance's name and kv rank: pd_instance_names / pd_kv_ranks of
    its leader host, else <pool>-<index> and prefill-first ranks."""
    total = sum(len(layouts[p]) for p in POOLS)
    rank_base = {"prefill": 0, "decode": len(layouts["prefill"])}
    result = []
    seen_names: dict[str, str] = {}
    seen_ranks: dict[int, str] = {}
    for pool_name in POOLS:
        led_here: dict[str, int] = {}
        for index, placement in enumerate(layouts[pool_name]):
            leader = placement[0][0]
            position = led_here.get(leader, 0)
            led_here[leader] = position + 1
            explicit_names = cluster.hosts[leader]["instance_names"]
            explicit_ranks = cluster.hosts[leader]["kv_ranks"]
            name = str(explicit_names[position]) if position < len(explicit_names) else f"{pool_name}-{index}"
            if not re.match(r"^[a-z0-9][a-z0-9-]{0,62}$", name):
                raise PlanError(
                    f"host {leader}: instance name {name!r} is not valid; "
                    "use lowercase letters, digits and '-' (it becomes a unit name and a metrics label)"
                )
            if position < len(explicit_ranks):
                rank = explicit_ranks[position]
                if not isinstance(rank, int) or isinstance(rank, bool) or not 0 <= rank < total:
                    raise PlanError(f"host {leader}: pd_kv_ranks entry {rank!r} must be an integer in 0..{total - 1}")
            else:
                rank = rank_base[pool_name] + index
            if name in seen_names:
                raise PlanError(
                    f"duplicate instance name {name}: on {seen_names[name]} and {leader}; "
                    "names from pd_instance_names must be unique and must not repeat a default <pool>-<index> name"
                )
            if rank in seen_ranks:
                raise PlanError(
                    f"duplicate kv_rank {rank}: instances {seen_ranks[rank]} and {name}; "
                    f"each instance needs its own rank in 0..{total - 1}"
                )
            seen_names[name] = leader
            seen_ranks[rank] = name
            result.append(Slot(pool_name, index, name, rank, total, tuple(placement)))
        _check_unused_names_and_ranks(cluster, pool_name, led_here)
    return result


def _check_unused_names_and_ranks(cluster: Cluster, pool_name: str, led_here: dict[str, int]) -> None:
    """A name or rank given to a host for an instance it does not lead would be
    silently dropped (a follower, or more entries than instances led)."""
    for host in cluster.groups[pool_name]:
        led = led_here.get(host, 0)
        for variable, key in (("pd_instance_names", "instance_names"), ("pd_kv_ranks", "kv_ranks")):
            given = cluster.hosts[host][key]
            if len(given) > led:
                raise PlanError(
                    f"host {host}: {variable} has {len(given)} entries but the host leads {led} {pool_name} "
                    f"instance(s) (a follower of a spanning instance leads none); give at most {led}, "
                    "in the order of the instances it leads"
                )


def build_instances(cluster: Cluster, layouts: dict, warnings: list) -> list[dict]:
    capacities: dict[tuple[str, str], dict | None] = {}

    def capacity_of(pool_name: str, profile: dict) -> dict | None:
        # One estimate per platform in a pool, warnings emitted once.
        key = (pool_name, profile["name"])
        if key not in capacities:
            capacities[key] = capacity(pool_name, cluster.pools[pool_name], profile, cluster.model_profile, warnings)
        return capacities[key]

    return [instance(cluster, slot, capacity_of) for slot in name_and_rank(cluster, layouts)]


def cpu_threads_bind(cores: list[int]) -> str:
    """VLLM_CPU_OMP_THREADS_BIND of a CPU node: one core list per local worker
    rank, separated by '|'. Each core stands in for one device, so each of the
    node's ranks (its local data-parallel ranks x tensor x pipeline) gets one
    core. vLLM 0.32's CPU build (utils/ompmultiprocessing.py) splits the
    value on '|' and gives local DP rank r the slice [r*world, (r+1)*world);
    a comma list would be one rank's cores and fail the second rank's
    length check."""
    return "|".join(str(core) for core in cores)


def instance(cluster: Cluster, slot: Slot, capacity_of) -> dict:
    """The plan entry of one instance: parallelism, nodes with GPUs, ranks,
    ports, argv and env."""
    pool_name, placement, profiles = slot.pool_name, slot.placement, cluster.profiles
    pool = cluster.pools[pool_name]
    tp, pp, dp = pool["tensor_parallel_size"], pool["pipeline_parallel_size"], pool["data_parallel_size"]
    g = pool["gpus_per_instance"]
    n_nodes = len(placement)
    if n_nodes > 1 and (dp % n_nodes or tp * pp * (dp // n_nodes) != profiles[placement[0][0]]["gpus"]):
        raise PlanError(
            f"pool {pool_name}: an instance of {g} GPUs spans {n_nodes} hosts, and vLLM spans hosts "
            f"with data parallelism only: data_parallel_size ({dp}) must be a multiple of {n_nodes} and "
            f"tensor_parallel_size x pipeline_parallel_size ({tp * pp}) must fit on one host"
        )
    dp_local = dp // n_nodes
    estimate = capacity_of(pool_name, profiles[placement[0][0]])
    instance = {
        "name": slot.name,
        "role": pool_name,
        "pool": pool_name,
        "index": slot.index,
        "kv_rank": slot.kv_rank,
        "kv_parallel_size": slot.kv_parallel_size,
        "unit": f"vllm-{slot.name}",
        "gpus_total": g,
        "parallelism": {
            "tensor_parallel_size": tp,
            "pipeline_parallel_size": pp,
            "data_parallel_size": dp,
            "data_parallel_size_local": dp_local,
            "expert_parallel": pool["expert_parallel"],
            "nodes": n_nodes,
        },
        "nodes": [],
    }
    for position, (host, host_slot) in enumerate(placement):
        hprofile = profiles[host]
        start = position * dp_local
        if hprofile["device"] == "cuda":
            devices = list(range(host_slot * g, host_slot * g + min(g, hprofile["gpus"])))
        else:
            cores = cluster.hosts[host]["cpu_cores"] or list(range(hprofile["gpus"]))
            if len(cores) < hprofile["gpus"]:
                raise PlanError(
                    f"host {host}: pd_cpu_cores lists {len(cores)} core(s) for {hprofile['gpus']} device slot(s)"
                )
            width = min(g, hprofile["gpus"])
            devices = cores[host_slot * width:(host_slot + 1) * width]
        instance["nodes"].append({
            "host": host,
            "address": cluster.addresses[host],
            "leader": position == 0,
            "device": hprofile["device"],
            "gpus": devices,
            "model": cluster.model["path"],
            "data_parallel_start_rank": start,
            "data_parallel_size_local": dp_local,
            "ports": node_ports(pool_name, pool, host_slot, position, start, dp_local),
        })
    leader = instance["nodes"][0]
    instance["url"] = f"http://{leader['address']}:{leader['ports']['http']}"
    instance["kv_transfer_config"] = kv_transfer_config(cluster, pool_name, pool, instance, leader)
    # Directories the KV connector writes (ExampleConnector's shared
    # storage), which the unit's read-only sandbox must leave writable.
    shared = (instance["kv_transfer_config"].get("kv_connector_extra_config") or {}).get("shared_storage_path")
    for node in instance["nodes"]:
        node["serve_args"] = serve_args(cluster, pool, instance, node)
        node["env"] = node_env(cluster, pool, instance, node)
        if node["device"] == "cpu":
            node["env"]["VLLM_CPU_OMP_THREADS_BIND"] = cpu_threads_bind(node["gpus"])
        launcher = vllm_host(node["device"], cluster.vllm["version"], cluster.vllm["install_root"])["launcher"]
        # The unit's whole ExecStart, composed here only.
        node["argv"] = [*launcher, node["model"], *node["serve_args"]]
        node["writable_paths"] = [str(shared)] if shared else []
    if estimate is not None:
        instance["capacity"] = estimate
    return instance


