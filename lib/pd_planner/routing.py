"""The router: vllm-router's argv per router host, its URLs and the worker
set it routes to."""

from __future__ import annotations

from .cluster import Cluster
from .errors import PlanError
from .vllm_args import flag_args

ROUTER_API_KEY_ENV = "VLLM_ROUTER_API_KEY"


def router_plan(cluster: Cluster, instances: list[dict]) -> dict:
    router = cluster.router
    mode = cluster.connector_info["router_mode"]
    prefill = [i for i in instances if i["role"] == "prefill"]
    decode = [i for i in instances if i["role"] == "decode"]
    for pool, members in (("prefill", prefill), ("decode", decode)):
        policy = router[f"{pool}_policy"] or router["policy"]
        # vllm-router refuses to start otherwise ("Power-of-two policy for
        # decode requires at least 2 decode workers").
        if policy == "power_of_two" and len(members) < 2:
            raise PlanError(
                f"pd_router.{pool}_policy power_of_two needs at least 2 {pool} instances, the plan has "
                f"{len(members)}: use round_robin, cache_aware or random for this pool"
            )
    hosts = []
    for host in cluster.groups["router"]:
        address = cluster.addresses[host]
        bind = router["bind_address"] or address
        args = ["--host", bind, "--port", str(router["port"]), "--vllm-pd-disaggregation"]
        if mode == "discovery":
            args += ["--vllm-discovery-address", f"{address}:{router['discovery_port']}"]
        else:
            for inst in prefill:
                args += ["--prefill", inst["url"], "none"]
            for inst in decode:
                args += ["--decode", inst["url"]]
            args += ["--kv-connector", "nixl"]
        args += [
            "--policy", router["policy"],
            "--prefill-policy", router["prefill_policy"],
            "--decode-policy", router["decode_policy"],
            "--health-check-endpoint", router["health_check_endpoint"],
            "--health-check-interval-secs", str(router["health_check_interval_secs"]),
            "--worker-startup-timeout-secs", str(router["worker_startup_timeout_secs"]),
            "--worker-startup-check-interval", str(router["worker_startup_check_interval"]),
            "--request-timeout-secs", str(router["request_timeout_secs"]),
        ]
        if router["retry_max_retries"] is not None:
            args += ["--retry-max-retries", str(router["retry_max_retries"])]
        args += ["--prometheus-host", address, "--prometheus-port", str(router["metrics_port"])]
        if router["api_key_enabled"]:
            # systemd expands ${VAR} from the unit's root-only EnvironmentFile;
            # the key itself never enters the plan.
            args += ["--api-key", "${" + ROUTER_API_KEY_ENV + "}"]
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
        # The worker set the router must route to (its API is reconciled to it).
        "workers": {"prefill": [i["url"] for i in prefill], "decode": [i["url"] for i in decode]},
        "api_key_env": ROUTER_API_KEY_ENV if router["api_key_enabled"] else None,
        "settings": router,
    }
