"""systemd rendering helpers: exact argv in ExecStart, safe EnvironmentFile lines,
and the per-host view of the plan the worker role renders from.

systemd parses ExecStart itself (no shell): words split on whitespace, quotes
group them, backslash escapes, `%` starts a specifier and `$` an environment
reference. Every argument is escaped so the process receives exactly the
plan's argv; only the environment references the plan asks for (the router's
API key, kept out of the unit file) stay references.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from .errors import PlanError

# Needs no quoting in ExecStart or in an EnvironmentFile.
_SAFE_WORD = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def exec_word(word: str, keep_env: Iterable[str] = ()) -> str:
    """One argv element as a systemd ExecStart word."""
    word = str(word)
    ref = _ENV_REF.match(word)
    if ref and ref.group(1) in set(keep_env):
        # "${NAME}" passes the variable's value as exactly one argument.
        return word
    escaped = word.replace("%", "%%").replace("$", "$$")
    if escaped and _SAFE_WORD.match(escaped):
        return escaped
    escaped = escaped.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'


def exec_line(argv: Iterable[str], keep_env: Iterable[str] = ()) -> str:
    """argv as the value of ExecStart=, continued over lines for readability."""
    keep = tuple(keep_env)
    words = [exec_word(w, keep) for w in argv]
    if not words:
        raise PlanError("ExecStart needs at least the program")
    if not words[0].startswith("/"):
        raise PlanError(f"ExecStart program must be an absolute path, got {argv!r}")
    lines, current = [], words[0]
    for word in words[1:]:
        # A flag starts a new line; its value stays beside it.
        if word.startswith("-") or word.startswith('"-'):
            lines.append(current)
            current = word
        else:
            current += " " + word
    lines.append(current)
    return " \\\n    ".join(lines)


def env_line(name: str, value) -> str:
    """NAME=value for an EnvironmentFile, quoted when it needs to be."""
    name = str(name)
    if not _ENV_NAME.match(name):
        raise PlanError(f"environment variable name {name!r} is not valid (letters, digits, _; not a digit first)")
    value = "" if value is None else str(value)
    if "\n" in value:
        raise PlanError(f"environment variable {name}: values cannot contain a newline")
    if value and _SAFE_WORD.match(value):
        return f"{name}={value}"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("`", "\\`")
    return f'{name}="{escaped}"'


def env_file(env: Mapping) -> str:
    """Sorted NAME=value lines, one per variable."""
    return "".join(env_line(k, env[k]) + "\n" for k in sorted(env))


def host_workers(plan: Mapping, host: str) -> list[dict]:
    """The instance nodes of a plan that run on one host, in plan order.

    Each item carries what the unit needs: the unit name, the instance and
    its pool, whether this node is the leader (serves HTTP) and the other
    hosts of a multi-node instance. Nothing that moves when another
    instance joins is in here (the kv_rank shifts for every decode instance
    when prefill grows): a changed item rewrites the unit and restarts it.
    """
    items = []
    for instance in plan.get("instances", []):
        nodes = instance["nodes"]
        for position, node in enumerate(nodes):
            if node["host"] != host:
                continue
            items.append({
                "unit": instance["unit"],
                "instance": instance["name"],
                "pool": instance["pool"],
                "role": instance["role"],
                "leader": bool(node["leader"]),
                "node_index": position,
                "node_count": len(nodes),
                "url": instance["url"],
                "leader_host": next(n["host"] for n in nodes if n["leader"]),
                "peer_hosts": [n["host"] for n in nodes if n["host"] != host],
                "model": node["model"],
                "serve_args": list(node["serve_args"]),
                "argv": list(node["argv"]),
                "writable_paths": list(node["writable_paths"]),
                "env": dict(node["env"]),
                "gpus": list(node["gpus"]),
                "kv_transfer_config": instance.get("kv_transfer_config") or {},
                # Discovery zmq: the leader's pd-announce unit ({unit, argv, addresses}), else None.
                "announce": instance.get("announce") if node["leader"] else None,
            })
    return items


def restart_batches(plan: Mapping, pending: Mapping[str, Iterable[str]], batch_size: int = 1,
                    stopped: Mapping[str, Iterable[str]] | None = None) -> list[dict]:
    """Which instances to (re)start, and in which batches.

    `pending` maps host -> units whose files changed there, `stopped` host ->
    units not running there. An instance with a stopped node serves no
    traffic: all of those start together in the first batch. An instance
    that runs and changed restarts in a rolling batch of at most
    `batch_size` instances of one pool, prefill pools before decode. All
    nodes of an instance restart together, followers first, leader last.
    """
    if int(batch_size) < 1:
        raise PlanError(f"restart batch size must be at least 1, got {batch_size}")
    changed = {(h, u) for h, units in pending.items() for u in units}
    down = {(h, u) for h, units in (stopped or {}).items() for u in units}
    starting: list[dict] = []
    by_pool: dict[str, list[dict]] = {}
    for instance in plan.get("instances", []):
        nodes = instance["nodes"]
        keys = [(n["host"], instance["unit"]) for n in nodes]
        if not any(k in changed or k in down for k in keys):
            continue
        leader = next(n for n in nodes if n["leader"])
        # Followers first so the leader finds its headless engines.
        hosts = [n["host"] for n in nodes if not n["leader"]] + [leader["host"]]
        member = {
            "instance": instance["name"],
            "pool": instance["pool"],
            "unit": instance["unit"],
            "url": instance["url"],
            "leader_host": leader["host"],
            "starts": [{"host": h, "unit": instance["unit"], "instance": instance["name"]} for h in hosts],
        }
        if any(k in down for k in keys):
            starting.append(member)
        else:
            by_pool.setdefault(instance["pool"], []).append(member)
    batches = []
    if starting:
        batches.append({"pool": "new or stopped", "rolling": False, "instances": starting,
                        "starts": [s for member in starting for s in member["starts"]]})
    order = sorted(by_pool, key=lambda pool: (0 if pool.startswith("prefill") else 1, pool))
    for pool in order:
        members = by_pool[pool]
        for first in range(0, len(members), int(batch_size)):
            chunk = members[first:first + int(batch_size)]
            batches.append({"pool": pool, "rolling": True, "instances": chunk,
                            "starts": [s for member in chunk for s in member["starts"]]})
    return batches
