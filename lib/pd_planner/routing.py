"""The router: vllm-router's argv per router host, its URLs and the worker
set it routes to.

Data-parallel instances: vllm-router 0.1.17 counts the `engine` labels on a
bare worker URL's /metrics and registers one worker per rank (`url@0` ..
`url@N`); `/remove_worker?url=<bare url>` then answers 200 and removes
nothing. The plan therefore names every rank itself (`--prefill url@r`), so
the registered set, the plan's router.workers and what scale-in removes are
the same strings. An instance with one rank keeps its bare URL (that is how
the router registers it).

Settings derived from the plan (each can be set explicitly in pd_router):
- request_timeout_secs caps the whole answer, streamed tokens included, so it
  must outlast the longest legitimate stream: the TTFT alert threshold plus
  decode's max_model_len tokens at the ITL alert threshold (a stream slower
  than that already pages someone).
- max_concurrent_requests is the decode pools' batch slots (max_num_seqs x
  data-parallel ranks, summed); the router holds a slot from admission until
  the answer's headers (a stream's start, a non-streamed answer's end), and
  the bucket refills by only 1 token/s on top. Beyond it the answer is 429 at
  once: queue_size 0, because 0.1.17's queue bounds the wait, not the count
  (its processor drains the channel into waiting tasks, so every overflow
  request waits queue_timeout_secs and then gets 408; measured: 16 at once
  against 4 slots and a queue of 4 gave 4 x 200 and 12 x 408, with queue 0
  4 x 200 and 12 x 429).
"""

from __future__ import annotations

import math

from .cluster import Cluster
from .errors import PlanError
from .vllm_args import flag_args, vllm_host
from .vllm_rules import default_scheduler_limits

ROUTER_API_KEY_ENV = "VLLM_ROUTER_API_KEY"


def rank_urls(instance: dict) -> list[str]:
    """The worker URLs vllm-router registers for one instance: one per
    data-parallel rank (`url@rank`), or the bare URL for a single rank."""
    dp = instance["parallelism"]["data_parallel_size"]
    return [instance["url"]] if dp == 1 else [f"{instance['url']}@{rank}" for rank in range(dp)]


def _serve_flag(instance: dict, flag: str) -> str | None:
    """The value the leader's `vllm serve` gets for flag (what really runs)."""
    args = next(n for n in instance["nodes"] if n["leader"])["serve_args"]
    return args[args.index(flag) + 1] if flag in args else None


def _size(text: str) -> int:
    units = {"k": 1000, "K": 1024, "m": 10**6, "M": 2**20}
    return int(text[:-1]) * units[text[-1]] if text[-1:] in units else int(text)


def decode_slots(cluster: Cluster, decode: list[dict]) -> int:
    """Requests the decode pools run at once: max_num_seqs per engine (the
    flag, else vLLM's default for the GPU) times the data-parallel ranks."""
    total = 0
    for inst in decode:
        seqs = _serve_flag(inst, "--max-num-seqs")
        if seqs is None:
            profile = cluster.profiles[inst["nodes"][0]["host"]]
            memory = profile["gpu_memory_gb"] if profile["device"] == "cuda" else None
            per_engine = default_scheduler_limits(memory)[1]
        else:
            per_engine = _size(seqs)
        total += per_engine * inst["parallelism"]["data_parallel_size"]
    return total


def longest_stream_secs(cluster: Cluster, decode: list[dict]) -> int | None:
    """Seconds the longest legitimate answer may take: the TTFT alert
    threshold plus max_model_len tokens at the ITL alert threshold. None when
    no max_model_len is known (vLLM reads it from the checkpoint)."""
    lengths = [_serve_flag(i, "--max-model-len") for i in decode]
    known = [_size(n) for n in lengths if n is not None]
    if len(known) < len(lengths):
        model_max = (cluster.model_profile or {}).get("max_model_len")
        if model_max is None:
            return None
        known.append(model_max)
    mon = cluster.monitoring
    return math.ceil(mon["alert_ttft_p99_seconds"] + max(known) * mon["alert_itl_p99_seconds"])


# When decode's max_model_len is unknown (vLLM reads it from the checkpoint):
# an hour, the figure the samples used before it was derived.
UNKNOWN_LENGTH_TIMEOUT_SECS = 3600
DERIVED = ("request_timeout_secs", "max_concurrent_requests", "queue_size", "queue_timeout_secs")
# A pool policy left unset, with no pd_router.policy: cache_aware sends a
# prompt prefix to the prefill instance that holds its KV; decode spreads.
DEFAULT_POLICY = {"prefill": "cache_aware", "decode": "round_robin"}


def router_settings(cluster: Cluster, decode: list[dict], warnings: list | None) -> dict:
    """pd_router with the derived values filled in (see the module doc)."""
    settings = dict(cluster.router)
    longest = longest_stream_secs(cluster, decode)
    if settings["request_timeout_secs"] is None:
        settings["request_timeout_secs"] = UNKNOWN_LENGTH_TIMEOUT_SECS if longest is None else longest
    elif longest is not None and settings["request_timeout_secs"] < longest and warnings is not None:
        warnings.append(
            f"pd_router.request_timeout_secs {settings['request_timeout_secs']} cuts answers the plan "
            f"allows: a stream of decode's max_model_len at the ITL alert threshold takes {longest} s "
            "(vllm-router's timeout covers the whole streamed answer); unset it to derive it"
        )
    if settings["max_concurrent_requests"] is None:
        settings["max_concurrent_requests"] = max(1, decode_slots(cluster, decode))
    if settings["queue_size"] is None:
        settings["queue_size"] = 0
    if settings["queue_timeout_secs"] is None:
        settings["queue_timeout_secs"] = max(1, math.ceil(cluster.monitoring["alert_ttft_p99_seconds"]))
    return settings


def router_mode(cluster: Cluster) -> str:
    """static: the unit lists the workers; discovery: they announce
    themselves (P2pNccl by its connector, NIXL through pd-announce)."""
    if cluster.connector_info["router_mode"] == "discovery" or cluster.router["discovery"] == "zmq":
        return "discovery"
    return "pd_nixl"


def announcers(cluster: Cluster, instances: list[dict], router: dict) -> None:
    """Discovery zmq with NIXL: each instance's leader runs pd-announce, which
    tells every router "type, http_address" each announce_interval_secs while
    the instance's /health answers, one message per data-parallel rank
    (`url@rank`, the same strings static mode lists), and stops at once when
    it does not: vllm-router drops an instance about 5 s after its last
    announcement. Sets instance["announce"] (unit, argv, state file, router
    targets, announced addresses) on each instance."""
    if router["mode"] != "discovery" or cluster.connector == "P2pNcclConnector":
        return
    targets = [f"tcp://{h['address']}:{cluster.router['discovery_port']}" for h in router["hosts"]]
    for inst in instances:
        leader = next(n for n in inst["nodes"] if n["leader"])
        venv = vllm_host(leader["device"], cluster.vllm["version"], cluster.vllm["install_root"])["venv"]
        argv = [f"{venv}/bin/python", f"{venv}/libexec/pd_announce.py",
                "--type", "P" if inst["role"] == "prefill" else "D",
                "--health", f"{inst['url']}{cluster.router['health_check_endpoint']}",
                "--interval", str(cluster.router["announce_interval_secs"])]
        for target in targets:
            argv += ["--router", target]
        for url in rank_urls(inst):
            argv += ["--address", url]
        unit = f"{inst['unit']}-announce"
        # The unit's RuntimeDirectory: what the router role reads to check
        # that every planned instance is announced (its /workers is empty).
        state = f"/run/pd-announce/{unit}/state.json"
        inst["announce"] = {"unit": unit, "argv": [*argv, "--state", state], "state": state,
                            "routers": targets, "addresses": rank_urls(inst)}


def router_plan(cluster: Cluster, instances: list[dict], warnings: list | None = None) -> dict:
    mode = router_mode(cluster)
    prefill = [i for i in instances if i["role"] == "prefill"]
    decode = [i for i in instances if i["role"] == "decode"]
    router = router_settings(cluster, decode, warnings)
    if router["policy"] is not None and router["prefill_policy"] is not None and router["decode_policy"] is not None:
        raise PlanError(
            f"pd_router.policy {router['policy']} applies to no pool: prefill_policy and decode_policy are both "
            "set; remove policy, or one of the pool policies it should fill in"
        )
    for pool, members in (("prefill", prefill), ("decode", decode)):
        policy = router[f"{pool}_policy"] = router[f"{pool}_policy"] or router["policy"] or DEFAULT_POLICY[pool]
        # vllm-router refuses to start otherwise ("Power-of-two policy for
        # decode requires at least 2 decode workers").
        if policy == "power_of_two" and len(members) < 2:
            raise PlanError(
                f"pd_router.{pool}_policy power_of_two needs at least 2 {pool} instances, the plan has "
                f"{len(members)}: use round_robin, cache_aware or random for this pool"
            )
    workers = {
        "prefill": sorted(u for i in prefill for u in rank_urls(i)),
        "decode": sorted(u for i in decode for u in rank_urls(i)),
    }
    hosts = []
    for host in cluster.groups["router"]:
        address = cluster.addresses[host]
        bind = router["bind_address"] or address
        args = ["--host", bind, "--port", str(router["port"]), "--vllm-pd-disaggregation"]
        if mode == "discovery":
            args += ["--vllm-discovery-address", f"{address}:{router['discovery_port']}"]
            if cluster.connector != "P2pNcclConnector":
                args += ["--kv-connector", "nixl"]
        else:
            for inst in prefill:
                for url in rank_urls(inst):
                    args += ["--prefill", url, "none"]
            for inst in decode:
                for url in rank_urls(inst):
                    args += ["--decode", url]
            args += ["--kv-connector", "nixl"]
        # No --retry-max-retries: in PD mode 0.1.17 sends each request once
        # (route_transparent does not retry), so the flag would promise nothing.
        # No --policy: vllm-router uses it only for a pool policy left unset,
        # and the plan sets both.
        args += [
            "--prefill-policy", router["prefill_policy"],
            "--decode-policy", router["decode_policy"],
            "--health-check-endpoint", router["health_check_endpoint"],
            "--health-check-interval-secs", str(router["health_check_interval_secs"]),
            "--health-check-timeout-secs", str(router["health_check_timeout_secs"]),
            "--health-failure-threshold", str(router["health_failure_threshold"]),
            "--worker-startup-timeout-secs", str(router["worker_startup_timeout_secs"]),
            "--worker-startup-check-interval", str(router["worker_startup_check_interval"]),
            "--request-timeout-secs", str(router["request_timeout_secs"]),
            "--max-concurrent-requests", str(router["max_concurrent_requests"]),
            "--rate-limit-tokens-per-second", "1",
            "--queue-size", str(router["queue_size"]),
            "--queue-timeout-secs", str(router["queue_timeout_secs"]),
        ]
        args += ["--prometheus-host", address, "--prometheus-port", str(router["metrics_port"])]
        # No --api-key even with keys enabled: in PD mode 0.1.17 authenticates
        # to the workers with $OPENAI_API_KEY from the root-only env file
        # (measured, tests/playbooks/test_api_key.py), and systemd would expand
        # ${VAR} onto the command line, where ps shows it.
        args += flag_args(router["extra_args"])
        hosts.append({
            "host": host,
            "address": address,
            "url": f"http://{bind if bind not in ('0.0.0.0', '::') else address}:{router['port']}",
            "metrics_url": f"http://{address}:{router['metrics_port']}/metrics",
            "args": args,
        })
    return {
        "mode": mode,
        "args": hosts[0]["args"],
        "url": hosts[0]["url"],
        "hosts": hosts,
        "prefill_urls": [i["url"] for i in prefill],
        "decode_urls": [i["url"] for i in decode],
        # The worker set the router must route to, as /workers lists it:
        # rank-pinned URLs, sorted (its API is reconciled to it).
        "workers": workers,
        "api_key_env": ROUTER_API_KEY_ENV if router["api_key_enabled"] else None,
        "settings": cluster.router,
        # What the router runs with for the options pd_router leaves unset.
        "effective": {key: router[key] for key in (*DERIVED, "prefill_policy", "decode_policy")},
    }
