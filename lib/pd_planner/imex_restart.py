"""Which vLLM instances an IMEX restart interrupts, and in which order the
nvidia role drains, stops, restarts and brings them back (roles/nvidia,
tasks/imex_restart.yml).

Restarting `nvidia-imex` on a tray breaks the NVLink memory every instance
with a process on that tray uses, and an instance spanning trays dies as a
whole (its leader's DP group loses the follower's ranks). So every running
instance with a node on a tray whose IMEX node list changed is drained from
the router(s), stopped on all of its trays (leader first), and started again
(followers first) once IMEX is back on each of its trays.

Trays are taken one step at a time: a step is one tray, or the trays that
running instances tie together (an instance's trays are all restarted before
it starts again, so it restarts once). Within a step the IMEX restarts run one
tray after another; steps never overlap, so at most one step's instances are
out of the router at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .errors import PlanError


def instance_router_workers(plan: Mapping, url: str) -> list[str]:
    """The router workers the plan registers for an instance: its URL, or one
    rank-pinned `url@rank` per data-parallel rank (vllm-router 0.1.17 removes
    a rank-expanded instance only by these)."""
    workers = plan.get("router", {}).get("workers", {}) or {}
    found = []
    for role in ("prefill", "decode"):
        for worker in workers.get(role, []) or []:
            if worker == url or (worker.startswith(url + "@") and worker[len(url) + 1:].isdigit()):
                found.append(worker)
    return found


def imex_restart_steps(plan: Mapping, changed: Iterable[str],
                       running: Mapping[str, Iterable[str]] | Iterable[Iterable[str]]) -> list[dict]:
    """Steps for the trays in `changed` (their IMEX node list changed and they
    run nvidia-imex), given `running`: host -> vLLM units active there now, or
    [host, unit] pairs (as the role reads them).

    Each step: `trays` (IMEX restarts, one after another, plan order),
    `instances` (running instances interrupted: name, pool, unit, url,
    leader_host, hosts with the leader first, router_workers), `stops`
    (host/unit/instance, leaders before followers), `start` (a batch in the
    form of the pd_restart_batches filter for vllm_worker's
    restart_batch.yml, followers first; none when nothing ran) and `idle`
    (instances on these trays that were not running: left stopped).
    """
    hosts = plan.get("hosts", {})
    changed_set = {str(h) for h in changed}
    unknown = sorted(changed_set - set(hosts))
    if unknown:
        raise PlanError(f"IMEX restart: hosts not in the plan: {', '.join(unknown)}")
    if isinstance(running, Mapping):
        active = {(str(h), str(u)) for h, units in running.items() for u in units}
    else:
        active = {(str(h), str(u)) for h, u in running}
    order = {name: i for i, name in enumerate(hosts)}

    # Trays joined by a running instance are one step (union-find).
    parent = {h: h for h in changed_set}

    def root(h: str) -> str:
        while parent[h] != h:
            parent[h] = parent[parent[h]]
            h = parent[h]
        return h

    interrupted, idle = [], []
    for instance in plan.get("instances", []):
        nodes = instance["nodes"]
        on = [n["host"] for n in nodes if n["host"] in changed_set]
        if not on:
            continue
        if not any((n["host"], instance["unit"]) in active for n in nodes):
            idle.append((instance, on))
            continue
        interrupted.append((instance, on))
        for other in on[1:]:
            parent[root(other)] = root(on[0])

    steps: dict[str, dict] = {}
    for tray in sorted(changed_set, key=lambda h: order[h]):
        steps.setdefault(root(tray), {"trays": [], "instances": [], "stops": [], "idle": []})["trays"].append(tray)
    for instance, on in interrupted:
        step = steps[root(on[0])]
        nodes = instance["nodes"]
        leader = next(n["host"] for n in nodes if n["leader"])
        followers = [n["host"] for n in nodes if not n["leader"]]
        step["instances"].append({
            "instance": instance["name"],
            "pool": instance["pool"],
            "unit": instance["unit"],
            "url": instance["url"],
            "leader_host": leader,
            "hosts": [leader, *followers],
            "router_workers": instance_router_workers(plan, instance["url"]),
            "starts": [{"host": h, "unit": instance["unit"], "instance": instance["name"]}
                       for h in [*followers, leader]],
        })
    for instance, on in idle:
        steps[root(on[0])]["idle"].append(instance["name"])

    result = []
    for step in steps.values():
        members = step["instances"]
        # Leaders stop first: the API server stops taking work before its
        # headless engines go.
        step["stops"] = [{"host": h, "unit": m["unit"], "instance": m["instance"]}
                         for m in members for h in m["hosts"]]
        step["start"] = ({"pool": "imex restart", "rolling": False,
                          "instances": [{k: m[k] for k in ("instance", "pool", "unit", "url", "leader_host", "starts")}
                                        for m in members],
                          "starts": [s for m in members for s in m["starts"]]}
                         if members else None)
        step["hosts"] = sorted({s["host"] for s in step["stops"]} | set(step["trays"]), key=lambda h: order[h])
        result.append(step)
    result.sort(key=lambda s: order[s["trays"][0]])
    return result
