"""Ray Serve serving mode: the same pools served by a Ray cluster under
systemd and one Serve application of ray.serve.llm:build_pd_openai_app.

`pd_serving.mode` picks the mode: `units` (default: one systemd unit per
instance node and vllm-router) or `rayserve`. In Ray mode the plan gains
`rayserve`: the `ray start` argv of the head (first router host) and of every
pool host, the ports they listen on (claimed like every other port), the
Prometheus jobs, and the Serve config that `serve deploy` sends to the head.

Replica counts live in the Serve config's `deployments:` overrides, never in
the application's `args`: Serve hashes import_path, runtime_env and args into
the application's code version (ray/serve/_private/deploy_utils.py
get_app_code_version), and a new code version restarts every replica, while
an override of num_replicas/autoscaling_config alone is applied in place.
"""

from __future__ import annotations

import json

from . import catalog, ports
from .cluster import POOLS, Cluster
from .errors import PlanError
from .schema import BOOL, PORT, STR, normalize
from .versions import parse_version
from .vllm_args import vllm_host

MODES = ("units", "rayserve")

# pd_serving: the mode, and the Ray cluster's settings (used in rayserve mode).
SERVING_OPTIONS: dict[str, tuple] = {
    "mode": (STR, "units", "units: a systemd unit per instance node + vllm-router; rayserve: Ray Serve LLM P/D"),
    "ray_version": (STR, "2.60.0", "Ray release of the rayserve mode (ray[serve,llm])"),
    "gcs_port": (PORT, 6379, "Ray head's GCS port (ray start --port)"),
    "dashboard_port": (PORT, 8265, "Ray dashboard / job API on the head; serve deploy talks to it"),
    "client_server_port": (PORT, 10001, "Ray client server on the head"),
    "serve_port": (PORT, 8000, "Serve's HTTP proxy on the head: the OpenAI API"),
    "node_manager_port": (PORT, 6380, "raylet port on every Ray node"),
    "object_manager_port": (PORT, 6381, "object manager port on every Ray node"),
    "runtime_env_agent_port": (PORT, 6382, "runtime env agent port on every Ray node"),
    "dashboard_agent_grpc_port": (PORT, 6383, "dashboard agent gRPC port on every Ray node"),
    "dashboard_agent_listen_port": (PORT, 6384, "dashboard agent HTTP port on every Ray node"),
    "metrics_export_port": (PORT, 6385, "Ray's Prometheus endpoint on every Ray node (Serve and vLLM metrics)"),
    "min_worker_port": (PORT, 10002, "first port of Ray's worker processes on every node"),
    "max_worker_port": (PORT, 10127, "last port of Ray's worker processes on every node"),
    "autoscale": (BOOL, False, "let Serve add replicas up to what the pool's GPUs hold (min stays the planned count)"),
}

# What each Ray release can run. Ray 2.60.0's vLLM engine imports
# vllm.entrypoints.launchers.cli_args.FrontendArgs
# (ray/llm/_internal/serve/engines/vllm/vllm_models.py); vLLM 0.32.0 has the
# module, 0.33.0 removed it (checked in both wheels).
RAY_RELEASES = {
    "2.60.0": {"vllm_pinned": "0.29.0", "vllm_importable_until": "0.33.0",
               "import": "vllm.entrypoints.launchers.cli_args"},
}

# Ray's accelerator names (ray/util/accelerators/accelerators.py) by GPU profile.
RAY_ACCELERATORS = {"gb200_nvl72_tray": "GB200", "hgx_h200": "H200", "hgx_b200": "B200"}

# vLLM flags that belong to one systemd node (its address, ports, DP rank
# split): Ray Serve sets them per replica itself.
PER_NODE_FLAGS = frozenset({
    "--host", "--port", "--served-model-name", "--api-key", "--headless",
    "--data-parallel-size-local", "--data-parallel-address", "--data-parallel-rpc-port",
    "--data-parallel-start-rank", "--data-parallel-rank",
})

# Serve deployment names: build_pd_openai_app prefixes the name we give.
DEPLOYMENT_PREFIX = {"prefill": "Prefill:", "decode": "Decode:"}
APP_NAME = "pd"
IMPORT_PATH = "ray.serve.llm:build_pd_openai_app"


def check_serving(raw: object) -> dict:
    serving = normalize(raw, SERVING_OPTIONS, "pd_serving")
    if serving["mode"] not in MODES:
        raise PlanError(f"pd_serving.mode is {serving['mode']!r}; valid: {', '.join(MODES)}")
    if serving["min_worker_port"] > serving["max_worker_port"]:
        raise PlanError(
            f"pd_serving.min_worker_port ({serving['min_worker_port']}) is above pd_serving.max_worker_port "
            f"({serving['max_worker_port']}); valid: min_worker_port <= max_worker_port"
        )
    return serving


def check_versions(serving: dict, vllm_version: str, connector: str, warnings: list) -> None:
    """Refuse what Ray cannot import or serve, naming the versions."""
    release = RAY_RELEASES.get(serving["ray_version"])
    if release is None:
        raise PlanError(
            f"pd_serving.ray_version is {serving['ray_version']!r}; the planner knows Ray "
            f"{', '.join(RAY_RELEASES)}"
        )
    if parse_version(vllm_version) >= parse_version(release["vllm_importable_until"]):
        raise PlanError(
            f"pd_serving.mode rayserve: Ray {serving['ray_version']} cannot import vLLM {vllm_version} "
            f"(it imports {release['import']}, which vLLM {release['vllm_importable_until']} removed); "
            f"set pd_vllm_version below {release['vllm_importable_until']} "
            f"(ray[llm]=={serving['ray_version']} pins {release['vllm_pinned']})"
        )
    if vllm_version != release["vllm_pinned"]:
        warnings.append(
            f"pd_serving: Ray {serving['ray_version']} pins vLLM {release['vllm_pinned']}; "
            f"vLLM {vllm_version} imports but is not the release Ray tested"
        )
    if connector != "NixlConnector":
        raise PlanError(
            f"pd_serving.mode rayserve moves KV with NixlConnector; pd_kv_connector is {connector}"
        )


def _value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def engine_kwargs(serve_args: list[str]) -> dict:
    """`vllm serve` flags of an instance's leader as vLLM engine kwargs,
    without the flags of one systemd node."""
    kwargs: dict = {}
    i = 0
    while i < len(serve_args):
        flag = serve_args[i]
        if not flag.startswith("--"):
            raise PlanError(f"pd_serving.mode rayserve: cannot map vLLM argument {flag!r} to an engine kwarg")
        has_value = i + 1 < len(serve_args) and not serve_args[i + 1].startswith("--")
        value = _value(serve_args[i + 1]) if has_value else True
        i += 2 if has_value else 1
        if flag in PER_NODE_FLAGS:
            continue
        name = flag[2:].replace("-", "_")
        if not has_value and name.startswith("no_"):
            name, value = name[3:], False
        kwargs[name] = value
    return kwargs


def llm_config(cluster: Cluster, pool_name: str, instance: dict, serving: dict) -> dict:
    """One pool's LLMConfig (as a dict) from its first instance."""
    leader = instance["nodes"][0]
    kwargs = engine_kwargs(leader["serve_args"])
    parallel = instance["parallelism"]
    per_replica = parallel["tensor_parallel_size"] * parallel["pipeline_parallel_size"]
    host = leader["host"]
    resource = {"GPU": 1} if leader["device"] == "cuda" else {"CPU": 1}
    bundle = {**resource, pool_resource(pool_name): 1}
    config = {
        "model_loading_config": {"model_id": cluster.model["served_name"], "model_source": leader["model"]},
        "engine_kwargs": kwargs,
        "placement_group_config": {"bundles": [bundle] * per_replica, "strategy": "STRICT_PACK"},
        "deployment_config": {"name": pool_name},
        # vLLM's engine metrics through Ray's metrics port (Ray 2.60's default, pinned here:
        # the scrape jobs and verify.yml rely on it).
        "log_engine_metrics": True,
        "runtime_env": {"env_vars": {k: v for k, v in sorted(leader["env"].items()) if k in RUNTIME_ENV_KEYS}},
        # Ray sets VLLM_NIXL_SIDE_CHANNEL_PORT = base + replica offset.
        "experimental_configs": {"NIXL_SIDE_CHANNEL_PORT_BASE": side_channel_base(cluster, pool_name)},
    }
    accelerator = RAY_ACCELERATORS.get(cluster.profiles[host]["name"])
    if accelerator:
        config["accelerator_type"] = accelerator
    return config


# Environment of every Ray node's processes (the engines inherit it).
RAY_NODE_ENV = {"DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
                "RAY_USAGE_STATS_ENABLED": "0"}

# Worker environment that holds for every replica (not a node's address/ports).
RUNTIME_ENV_KEYS = frozenset({"DO_NOT_TRACK", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "VLLM_NO_USAGE_STATS",
                              "UCX_TLS", "VLLM_LOGGING_LEVEL"})


def node_env(cluster: Cluster, host: str, env: dict) -> dict:
    """A Ray node's environment: the cluster's, and its own NICs for UCX (NIXL)."""
    devices = cluster.hosts[host].get("ucx_net_devices")
    return {**env, **({"UCX_NET_DEVICES": devices} if devices else {})}


def pool_resource(pool_name: str) -> str:
    """Custom Ray resource a pool's hosts offer, one per GPU: keeps each
    pool's replicas on its own hosts."""
    return f"pd_{pool_name}"


def side_channel_base(cluster: Cluster, pool_name: str) -> int:
    return cluster.pools[pool_name]["nixl_side_channel_port"] or catalog.DEFAULT_PORTS[pool_name]["nixl_side_channel"]


def replica_counts(cluster: Cluster, instances: list[dict], serving: dict) -> dict:
    """Serve replicas per pool: planned instances, and what the pool's GPUs
    hold. A DP instance is data_parallel_size gang-scheduled replicas."""
    counts = {}
    for pool_name in POOLS:
        members = [i for i in instances if i["role"] == pool_name]
        parallel = members[0]["parallelism"]
        dp = parallel["data_parallel_size"]
        gpus = sum(cluster.profiles[h]["gpus"] for h in cluster.groups[pool_name])
        most = max(len(members), gpus // members[0]["gpus_total"])
        counts[pool_name] = {"instances": len(members), "max_instances": most, "dp": dp,
                             "replicas": len(members) * dp,
                             "max_replicas": (most if serving["autoscale"] else len(members)) * dp}
    return counts


def serve_config(cluster: Cluster, instances: list[dict], serving: dict, head_address: str) -> dict:
    """The Serve config YAML (as a dict) for `serve deploy`."""
    configs = {}
    for pool_name in POOLS:
        first = next(i for i in instances if i["role"] == pool_name)
        configs[pool_name] = llm_config(cluster, pool_name, first, serving)
    counts = replica_counts(cluster, instances, serving)
    deployments = [
        {"name": DEPLOYMENT_PREFIX[p] + p, "num_replicas": "auto",
         "autoscaling_config": {"min_replicas": counts[p]["replicas"], "initial_replicas": counts[p]["replicas"],
                                "max_replicas": counts[p]["max_replicas"]}}
        for p in POOLS
    ]
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": head_address, "port": serving["serve_port"]},
        "applications": [{
            "name": APP_NAME,
            "route_prefix": "/",
            "import_path": IMPORT_PATH,
            "args": {"prefill_config": configs["prefill"], "decode_config": configs["decode"]},
            "deployments": deployments,
        }],
    }


NODE_PORTS = ("node_manager_port", "object_manager_port", "runtime_env_agent_port", "dashboard_agent_grpc_port",
              "dashboard_agent_listen_port", "metrics_export_port")
HEAD_PORTS = ("gcs_port", "dashboard_port", "client_server_port", "serve_port")


def ray_start_args(cluster: Cluster, serving: dict, host: str, head: str) -> list[str]:
    """`ray start ... --block` of one host (head or worker), bound to its cluster address."""
    address = cluster.addresses[host]
    if host == head:
        args = ["--head", "--port", str(serving["gcs_port"]), "--dashboard-host", address,
                "--dashboard-port", str(serving["dashboard_port"]),
                "--ray-client-server-port", str(serving["client_server_port"])]
    else:
        args = ["--address", f"{cluster.addresses[head]}:{serving['gcs_port']}"]
    args += ["--node-ip-address", address]
    for key in NODE_PORTS:
        args += ["--" + key.replace("_", "-"), str(serving[key])]
    args += ["--min-worker-port", str(serving["min_worker_port"]),
             "--max-worker-port", str(serving["max_worker_port"])]
    pool = next((p for p in POOLS if host in cluster.groups[p]), None)
    profile = cluster.profiles.get(host)
    if pool is None:
        args += ["--num-gpus", "0", "--resources", "{}"]
    elif profile["device"] == "cuda":
        args += ["--num-gpus", str(profile["gpus"]),
                 "--resources", json.dumps({pool_resource(pool): profile["gpus"]}, separators=(",", ":"))]
    else:
        # CPU nodes: one bundle per planned "GPU" (a core set stands for it).
        args += ["--num-gpus", "0",
                 "--resources", json.dumps({pool_resource(pool): profile["gpus"]}, separators=(",", ":"))]
    return ["start", *args, "--disable-usage-stats", "--block"]


def claim_ports(cluster: Cluster, serving: dict, head: str, counts: dict, hosts_index: dict) -> None:
    """Ray's listeners, claimed beside what stays of the plan (dcgm-exporter,
    Prometheus, Grafana); units-mode worker and router ports are dropped."""
    owners: dict[str, dict[int, dict]] = {}
    for host, entry in hosts_index.items():
        kept = [p for p in entry["ports"] if not p["unit"].startswith(("vllm-prefill", "vllm-decode", "vllm-router"))]
        for claim in kept:
            ports._claim(owners, host, claim["port"], claim["owner"], claim["unit"])
    ray_hosts = [head, *[h for p in POOLS for h in cluster.groups[p] if h != head]]
    for host in ray_hosts:
        unit = "ray-head" if host == head else "ray-worker"
        names = (HEAD_PORTS if host == head else ()) + NODE_PORTS
        for key in names:
            ports._claim(owners, host, serving[key], f"ray {key}", unit)
        for port in range(serving["min_worker_port"], serving["max_worker_port"] + 1):
            ports._claim(owners, host, port, "ray worker process", unit)
        for pool_name in POOLS:
            if host in cluster.groups[pool_name]:
                base = side_channel_base(cluster, pool_name)
                # Any replica of the pool may land here: its offset is its
                # global rank times its GPUs (Ray's _compute_port_offset).
                width = counts[pool_name]["max_replicas"] * max(1, counts[pool_name]["per_replica_gpus"])
                for port in range(base, base + width):
                    ports._claim(owners, host, port, f"{pool_name} nixl side channel", unit)
    for host, entry in hosts_index.items():
        entry["ports"] = [{"port": port, **claim} for port, claim in sorted(owners.get(host, {}).items())]


# Ray exports vLLM's metrics through its own agent as ray_vllm_<name>
# (vllm/v1/metrics/ray_wrappers.py replaces ':' by '_', Ray adds "ray_"):
# renamed back to vllm:<name> so the units-mode rules and dashboards apply.
VLLM_METRIC_RELABEL = [{"source_labels": ["__name__"], "regex": "ray_vllm_(.+)",
                        "target_label": "__name__", "replacement": "vllm:$1"}]


def scrape_jobs(cluster: Cluster, serving: dict, head: str) -> list[dict]:
    """Ray's metrics endpoint on every Ray node: the vLLM engine metrics of
    the replicas there under the units-mode job names (vllm-prefill,
    vllm-decode) and pool labels, and Serve's own metrics (ray_serve_*)."""
    jobs = []
    for pool_name in POOLS:
        members = [h for h in cluster.groups[pool_name] if h != head]
        jobs.append({
            "job_name": f"vllm-{pool_name}", "metrics_path": "/metrics",
            "metric_relabel_configs": VLLM_METRIC_RELABEL,
            "targets": [{"target": f"{cluster.addresses[h]}:{serving['metrics_export_port']}",
                         "labels": {"pool": pool_name, "instance": h, "host": h}} for h in members],
        })
    jobs.append({"job_name": "ray-head", "metrics_path": "/metrics",
                 "targets": [{"target": f"{cluster.addresses[head]}:{serving['metrics_export_port']}",
                              "labels": {"pool": "router", "instance": head, "host": head}}]})
    return jobs


def apply(spec: dict, cluster: Cluster, instances: list[dict], plan: dict, warnings: list) -> dict:
    """The plan as build.py made it, turned to Ray mode when pd_serving asks."""
    serving = check_serving(spec.get("serving"))
    if serving["mode"] != "rayserve":
        return plan  # units mode: the plan is untouched
    check_versions(serving, cluster.vllm["version"], cluster.connector, warnings)
    if len(cluster.groups["router"]) != 1:
        raise PlanError(
            f"pd_serving.mode rayserve runs the Ray head and Serve's HTTP proxy on the router host; "
            f"group router has {len(cluster.groups['router'])} hosts, give it exactly one"
        )
    head = cluster.groups["router"][0]
    counts = replica_counts(cluster, instances, serving)
    for pool_name in POOLS:
        first = next(i for i in instances if i["role"] == pool_name)["parallelism"]
        counts[pool_name]["per_replica_gpus"] = first["tensor_parallel_size"] * first["pipeline_parallel_size"]
    claim_ports(cluster, serving, head, counts, plan["hosts"])
    nodes = [head, *[h for p in POOLS for h in cluster.groups[p] if h != head]]
    address = cluster.addresses[head]
    # Every Ray node imports vLLM (Serve may build the app or place the
    # ingress on any node): the head gets the same vLLM venv, CPU flavor.
    if plan["hosts"][head]["vllm"] is None:
        plan["hosts"][head]["vllm"] = vllm_host("cpu", cluster.vllm["version"], cluster.vllm["install_root"])
    env = {**RAY_NODE_ENV, **({"UCX_TLS": cluster.ucx_tls} if cluster.ucx_tls else {}), **cluster.worker_env}
    plan["rayserve"] = {
        "settings": serving,
        "head": head,
        "head_address": address,
        "gcs_address": f"{address}:{serving['gcs_port']}",
        "dashboard_url": f"http://{address}:{serving['dashboard_port']}",
        "url": f"http://{address}:{serving['serve_port']}",
        "nodes": [{"host": h, "role": "head" if h == head else "worker",
                   "unit": "ray-head" if h == head else "ray-worker",
                   "address": cluster.addresses[h], "venv": plan["hosts"][h]["vllm"]["venv"],
                   "args": ray_start_args(cluster, serving, h, head), "env": node_env(cluster, h, env)}
                  for h in nodes],
        "replicas": {p: {k: v for k, v in c.items() if k != "per_replica_gpus"} for p, c in counts.items()},
        "serve_config": serve_config(cluster, instances, serving, address),
    }
    # Prometheus: Ray's endpoints replace the units' /metrics and the router's.
    kept = [j for j in plan["scrape"]["jobs"] if j["job_name"] in ("dcgm", "prometheus")]
    plan["scrape"] = {**plan["scrape"], "jobs": scrape_jobs(cluster, serving, head) + kept}
    # No vLLM units: Ray starts the engines (the instances stay as the pools' shape).
    for entry in plan["hosts"].values():
        entry["units"] = []
    return plan
