"""Grafana dashboards for disaggregated serving, generated as data.

Three dashboards: the cluster overview (per-pool figures from the recording
rules in monitoring.py), the instances (templated on pool, instance and
data-parallel rank, raw vLLM series per rank), and the GPUs (dcgm-exporter).
They link to each other and mark vLLM restarts and down targets. Every
PromQL expression here, annotations and variables included, is listed by
`expressions()` so tests check it with promtool and the lab evaluates it
through Prometheus' query API; nobody hand-edits the JSON.

Written as plain data rather than with grafanalib or grafana-foundation-sdk:
docs/monitoring.md ("Grafana") says why.
"""

from __future__ import annotations

import re

from .grafana import (
    COUNT_UNIT,
    DATASOURCE,
    Layout,
    stat,
    timeseries,
    variable_datasource,
    variable_query,
)

SCHEMA_VERSION = 39
# dcgm-exporter fields the GPU dashboard reads (all in dcgm-exporter's
# default counters); the lab has no GPU, so they only exist on hardware.
DCGM_METRICS = (
    "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "DCGM_FI_PROF_DRAM_ACTIVE",
    "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", "DCGM_FI_DEV_XID_ERRORS",
)
VLLM_JOBS = 'job=~"vllm-prefill|vllm-decode"'
# Instance dashboard selector. `engine` is vLLM's label for the
# data-parallel rank inside one instance: every vLLM series carries it.
WORKER = 'pool=~"$pool", instance=~"$instance", engine=~"$rank"'
RATE = "[$__rate_interval]"
# Grafana's own variables, and what tests substitute for them.
BUILTINS = {"$__rate_interval": "1m"}
TAG = "vllm-pd"


def _annotations() -> list[dict]:
    """Restarts and outages drawn on every time series. Grafana marks an event
    where a Prometheus annotation query's value is 1 or more, so each query
    returns a series at 0 otherwise (and the lab checks it returns data)."""
    builtin = {"name": "Annotations & Alerts", "builtIn": 1, "type": "dashboard", "enable": True, "hide": True,
               "iconColor": "rgba(0, 211, 255, 1)",
               "datasource": {"type": "grafana", "uid": "-- Grafana --"},
               "target": {"type": "dashboard", "limit": 100, "matchAny": False, "tags": []}}
    return [builtin, *({
        "name": name, "datasource": DATASOURCE, "enable": True, "hide": False, "iconColor": color,
        "expr": expr, "step": "1m", "titleFormat": text, "textFormat": "", "tagKeys": "pool,instance",
        "useValueForTime": False,
    } for name, expr, color, text in (
        ("vLLM restarts", f"changes(process_start_time_seconds{{{VLLM_JOBS}}}[2m])", "orange",
         "{{instance}} restarted"),
        ("Targets down", "1 - up", "red", "{{job}} {{instance}} not scraped"),
    ))]


def _links() -> list[dict]:
    """Every PD dashboard links to the others (by tag, so a new one joins),
    keeping the time range and the variables they share (pool)."""
    return [{"title": "vLLM PD dashboards", "type": "dashboards", "tags": [TAG], "asDropdown": False,
             "includeVars": True, "keepTime": True, "targetBlank": False, "icon": "external link",
             "tooltip": "", "url": ""}]


def _dashboard(uid: str, title: str, description: str, layout: Layout, variables: list[dict]) -> dict:
    return {
        "uid": uid, "title": title, "description": description, "tags": ["vllm", "disaggregated", TAG],
        "schemaVersion": SCHEMA_VERSION, "version": 1, "editable": False, "graphTooltip": 1,
        "time": {"from": "now-1h", "to": "now"}, "refresh": "30s", "timezone": "",
        "templating": {"list": [variable_datasource(), *variables]},
        "annotations": {"list": _annotations()}, "links": _links(), "panels": layout.panels,
    }


# From a per-pool overview series to that pool's instances, same time range.
POOL_DRILLDOWN = [{"title": "Instances of pool ${__field.labels.pool}",
                   "url": "/d/pd-instance/vllm-pd-instance?var-pool=${__field.labels.pool}&${__url_time_range}"}]


def overview() -> dict:
    lay = Layout()
    drill = {"links": POOL_DRILLDOWN}
    lay.row("Throughput: tokens per GPU per second (TPGS)")
    lay.add(timeseries("TPGS per pool, measured vs published", [
        ("pool:vllm_tokens_per_gpu:rate1m", "{{pool}} measured"),
        ("pool:pd_tpgs_reference:value", "{{pool}} published (GB200)"),
    ], COUNT_UNIT, "Prefill: prompt tokens/s per prefill GPU. Decode: generated tokens/s per decode GPU. "
       "GPU counts come from the plan; the published figures are the article's GB200 results.",
       axis="tokens/s per GPU", **drill), 16)
    lay.add(stat("TPGS vs published", [("pool:vllm_tokens_per_gpu:reference_ratio", "{{pool}}")],
                 "percentunit", "Measured TPGS as a share of the published GB200 figure, per pool."), 8)
    lay.add(timeseries("Tokens per second", [
        ("pool:vllm_prompt_tokens:rate1m", "{{pool}} prompt"),
        ("pool:vllm_generation_tokens:rate1m", "{{pool}} generated"),
        ("pool:vllm_external_kv_tokens:rate1m", "{{pool}} received by KV transfer"),
    ], COUNT_UNIT, "Prompt tokens processed and tokens generated per second, per pool. 'Received by KV "
       "transfer' is prompt KV that decode pulled from prefill instead of computing it: on a healthy "
       "deployment nearly all of decode's prompt tokens.", axis="tokens/s", **drill), 12)
    lay.add(timeseries("Requests per second", [
        ("job:vllm_router_requests:rate1m", "router"),
        ("pool:vllm_requests_success:rate1m", "{{pool}} finished"),
        ("job:vllm_router_errors:rate1m", "router errors"),
    ], "reqps", "Requests the router received, requests each pool finished, and router errors "
       "(prefill, decode or stream failures)."), 12)
    lay.row("Time to first token")
    lay.add(timeseries("Time to first token, split (mean)", [
        ('pool:vllm_request_queue_time_seconds:mean5m{pool="prefill"}', "1 prefill: queued"),
        ('pool:vllm_request_prefill_time_seconds:mean5m{pool="prefill"}', "2 prefill: computing the prompt"),
        ('pool:vllm_request_queue_time_seconds:mean5m{pool="decode"}', "3 decode: waiting for KV (transfer)"),
        ('pool:vllm_request_prefill_time_seconds:mean5m{pool="decode"}', "4 decode: first decode step"),
    ], "s", "Where a request's first token waits, stacked in order, means over 5 minutes (means add up, "
       "quantiles do not). Decode's queue time includes the KV transfer from prefill, since vLLM schedules "
       "a request only once its KV has arrived; the NIXL row shows the transfer itself. The router's own "
       "time and the network to the client are not measured by vLLM.", stacked=True), 12)
    lay.add(timeseries("Time to first token per pool", [
        ("pool:vllm_time_to_first_token_seconds:quantile5m", "{{pool}} p{{quantile}}"),
    ], "s", "As each vLLM instance sees it, from its arrival to its first token. Prefill's includes only "
       "its queue and prompt; decode's includes waiting for the KV. Over 5 minutes.", **drill), 12)
    lay.row("Latency")
    lay.add(timeseries("Inter-token latency", [
        ("pool:vllm_inter_token_latency_seconds:quantile5m", "{{pool}} p{{quantile}}"),
    ], "s", "Time between two generated tokens of a request (decode's figure), quantiles over 5 minutes.",
        **drill), 12)
    lay.add(timeseries("End-to-end request latency", [
        ("pool:vllm_e2e_request_latency_seconds:quantile5m", "{{pool}} p{{quantile}}"),
        ("job:vllm_router_pd_request_duration_seconds:quantile5m", "router p{{quantile}}"),
    ], "s", "Per vLLM pool, and as the router measures a whole prefill+decode request.", **drill), 12)
    lay.row("Queues and KV cache")
    lay.add(timeseries("Requests waiting and running", [
        ("pool:vllm_requests_waiting:sum", "{{pool}} waiting"),
        ("pool:vllm_requests_running:sum", "{{pool}} running"),
    ], COUNT_UNIT, "Prefill waiting while decode idles: add prefill. The reverse: add decode.",
       axis="requests", **drill), 8)
    lay.add(timeseries("Running requests: busiest and idlest rank", [
        ("pool:vllm_requests_running:max", "{{pool}} busiest rank"),
        ("pool:vllm_requests_running:min", "{{pool}} idlest rank"),
    ], COUNT_UNIT, "Requests running on the busiest and the idlest data-parallel rank (vLLM's `engine` "
       "label) of each pool. A wide gap means the load is not balanced across ranks; the instance dashboard "
       "shows each rank.", axis="requests per rank", **drill), 8)
    lay.add(timeseries("KV cache usage", [
        ("pool:vllm_kv_cache_usage:max", "{{pool}} fullest rank"),
        ("pool:vllm_kv_cache_usage:avg", "{{pool}} mean"),
    ], "percentunit", "Share of KV cache blocks in use, over the ranks of each pool. Near 100 %, requests "
       "are preempted.", **drill), 8)
    lay.add(timeseries("Prefix cache hit rate", [
        ("pool:vllm_prefix_cache_hit:ratio5m", "{{pool}}"),
    ], "percentunit", "Share of prompt tokens found in the local prefix cache, over 5 minutes.", **drill), 12)
    lay.add(timeseries("Preemptions", [
        ("pool:vllm_preemptions:rate5m", "{{pool}}"),
    ], COUNT_UNIT, "Requests preempted per second (KV cache full): they are recomputed later.",
       axis="preemptions/s", **drill), 12)
    lay.row("KV transfer (NIXL)")
    lay.add(timeseries("Transfer time", [
        ("pool:vllm_nixl_xfer_time_seconds:quantile5m", "{{pool}} p{{quantile}}"),
    ], "s", "Duration of one NIXL KV transfer (decode reads from prefill), quantiles over 5 minutes.",
        **drill), 8)
    lay.add(timeseries("Post time", [
        ("pool:vllm_nixl_post_time_seconds:quantile5m", "{{pool}} p{{quantile}}"),
    ], "s", "Time to post a NIXL transfer request, before the data moves. High post time with normal "
       "transfer time points at the NIXL agent or a starved progress thread, not the network.", **drill), 8)
    lay.add(timeseries("Bytes per transfer", [
        ("pool:vllm_nixl_bytes_per_transfer:mean5m", "{{pool}}"),
    ], "bytes", "Mean KV bytes moved by one transfer, over 5 minutes: grows with prompt length.", **drill), 8)
    lay.add(timeseries("Transfers per second", [
        ("pool:vllm_nixl_transfers:rate1m", "{{pool}}"),
    ], COUNT_UNIT, "NIXL KV transfers completed per second.", axis="transfers/s", **drill), 8)
    lay.add(timeseries("KV transfer throughput", [
        ("pool:vllm_nixl_bytes:rate1m", "{{pool}}"),
    ], "Bps", "KV bytes moved per second by NIXL.", **drill), 8)
    lay.add(stat("Failed transfers and notifications (5m)", [
        ("pool:vllm_nixl_failed_transfers:increase5m", "{{pool}} transfers"),
        ("pool:vllm_nixl_failed_notifications:increase5m", "{{pool}} notifications"),
    ], COUNT_UNIT, "NIXL transfers (handshakes included) and completion notifications that failed in the "
       "last 5 minutes. Any is red: check UCX_NET_DEVICES/UCX_TLS and the side-channel ports "
       "(docs/troubleshooting.md).", axis="failures", thresholds=[(None, "green"), (1, "red")]), 8)
    lay.add(stat("Expired KV (5m)", [
        ("pool:vllm_nixl_kv_expired:increase5m", "{{pool}} requests"),
        ("pool:vllm_nixl_notifications_after_expiry:increase5m", "{{pool}} late notifications"),
    ], COUNT_UNIT, "Requests whose KV prefill released after its lease before decode read it, and "
       "notifications that arrived after that. The request is recomputed or fails. Causes: decode "
       "overloaded, a starved NIXL progress thread, a slow network path (docs/troubleshooting.md, "
       "'Expired KV').", axis="requests", thresholds=[(None, "green"), (1, "red")]), 8)
    lay.row("Health")
    lay.add(stat("Instances up", [("pool:up:sum", "{{pool}} up"), ("pool:up:count", "{{pool}} planned")],
                 COUNT_UNIT, "vLLM instances Prometheus scrapes successfully, against the plan's count.",
                 axis="instances"), 6)
    lay.add(stat("Restarts (1h)", [("pool:vllm_restarts:changes1h", "{{pool}}")], COUNT_UNIT,
                 "vLLM instance restarts in the last hour (their process start time changed); the time "
                 "series show each as an annotation.", axis="restarts",
                 thresholds=[(None, "green"), (1, "orange")]), 6)
    lay.add(stat("Router: unhealthy workers", [("job:vllm_router_unhealthy_workers:sum", "unhealthy")],
                 COUNT_UNIT, "Workers the router's health check has ejected: it sends them no requests.",
                 axis="workers", thresholds=[(None, "green"), (1, "red")]), 6)
    lay.add(timeseries("Router worker health", [("vllm_router_worker_health", "{{worker}}")], COUNT_UNIT,
                       "1 while the router counts a worker healthy, 0 once it ejected it.",
                       axis="healthy (1) / ejected (0)"), 6)
    return _dashboard("pd-overview", "vLLM PD: cluster overview",
                      "Disaggregated prefill/decode serving: per-pool throughput, time to first token split, "
                      "latency, queues, KV transfer, health.", lay, [])


def _per_rank_quantile(metric: str, q: str = "0.99") -> str:
    return f"histogram_quantile({q}, sum by (instance, engine, le) (rate({metric}_bucket{{{WORKER}}}{RATE})))"


def _per_rank_mean(metric: str) -> str:
    return (f"sum by (instance, engine) (rate({metric}_sum{{{WORKER}}}{RATE}))"
            f" / sum by (instance, engine) (rate({metric}_count{{{WORKER}}}{RATE}))")


def instance() -> dict:
    """Every vLLM series here is per data-parallel rank (`engine`)."""
    lay = Layout()
    rank = "{{instance}} rank {{engine}}"
    lay.row("Load per rank")
    lay.add(timeseries("Tokens per second", [
        (f"rate(vllm:prompt_tokens_total{{{WORKER}}}{RATE})", f"{rank} prompt"),
        (f"rate(vllm:generation_tokens_total{{{WORKER}}}{RATE})", f"{rank} generated"),
        (f'rate(vllm:prompt_tokens_by_source_total{{{WORKER}, source="external_kv_transfer"}}{RATE})',
         f"{rank} received by KV transfer"),
    ], COUNT_UNIT, "Prompt tokens processed, tokens generated, and prompt tokens whose KV came by "
       "transfer, per second and per data-parallel rank.", axis="tokens/s"), 12)
    lay.add(timeseries("Requests waiting and running", [
        (f"vllm:num_requests_waiting{{{WORKER}}}", f"{rank} waiting"),
        (f"vllm:num_requests_running{{{WORKER}}}", f"{rank} running"),
    ], COUNT_UNIT, "Per rank: ranks with very different counts mean the load is not balanced.",
       axis="requests"), 12)
    lay.add(timeseries("Why requests wait", [
        (f"vllm:num_requests_waiting_by_reason{{{WORKER}}}", f"{rank} {{{{reason}}}}"),
    ], COUNT_UNIT, "Waiting requests by vLLM's reason: 'capacity' (no room in the batch or the KV cache) "
       "or 'deferred'.", axis="requests"), 12)
    lay.add(timeseries("KV fetch stage (decode)", [
        (f"vllm:num_requests_kv_fetch_by_stage{{{WORKER}}}", f"{rank} {{{{stage}}}}"),
    ], COUNT_UNIT, "Decode requests by the stage of their KV fetch from prefill: waiting to start, in "
       "progress, or completed and waiting to be scheduled. Only decode instances have this series.",
       axis="requests"), 12)
    lay.row("Time to first token per rank")
    lay.add(timeseries("Time to first token, split (mean)", [
        (_per_rank_mean("vllm:request_queue_time_seconds"), f"{rank} queued"),
        (_per_rank_mean("vllm:request_prefill_time_seconds"), f"{rank} scheduled to first token"),
    ], "s", "Stacked means over the rate interval: queued (on decode, this includes waiting for the KV "
       "from prefill) and from scheduling to the first token (prefill: computing the prompt; decode: the "
       "first decode step).", stacked=True), 12)
    lay.add(timeseries("Time to first token p99", [
        (_per_rank_quantile("vllm:time_to_first_token_seconds"), rank),
    ], "s", "From the request's arrival at this instance to its first token, p99 per rank."), 12)
    lay.row("Latency per rank")
    for title, metric, what in (
            ("Inter-token latency p99", "vllm:inter_token_latency_seconds", "Time between two generated tokens"),
            ("Queue time p99", "vllm:request_queue_time_seconds", "Time a request waited before scheduling"),
            ("End-to-end latency p99", "vllm:e2e_request_latency_seconds",
             "From arrival at this instance to the last token")):
        lay.add(timeseries(title, [(_per_rank_quantile(metric), rank)], "s", f"{what}, p99 per rank."), 8)
    lay.row("KV cache per rank")
    lay.add(timeseries("KV cache usage", [(f"vllm:kv_cache_usage_perc{{{WORKER}}}", rank)], "percentunit",
                       "Share of each rank's KV cache blocks in use; near 100 % requests are preempted."), 8)
    lay.add(timeseries("Prefix cache hit rate", [
        (f"sum by (instance, engine) (rate(vllm:prefix_cache_hits_total{{{WORKER}}}{RATE}))"
         f" / sum by (instance, engine) (rate(vllm:prefix_cache_queries_total{{{WORKER}}}{RATE}))", rank),
    ], "percentunit", "Share of prompt tokens found in the rank's prefix cache."), 8)
    lay.add(timeseries("Preemptions", [
        (f"increase(vllm:num_preemptions_total{{{WORKER}}}{RATE})", rank),
    ], COUNT_UNIT, "Requests preempted per rate interval (KV cache full).", axis="preemptions"), 8)
    lay.row("KV transfer (NIXL) per rank")
    lay.add(timeseries("Transfer time", [
        (_per_rank_quantile("vllm:nixl_xfer_time_seconds", "0.5"), f"{rank} p50"),
        (_per_rank_quantile("vllm:nixl_xfer_time_seconds"), f"{rank} p99"),
    ], "s", "Duration of one NIXL KV transfer, recorded on the reading side (decode)."), 8)
    lay.add(timeseries("Post time p99", [(_per_rank_quantile("vllm:nixl_post_time_seconds"), rank)], "s",
                       "Time to post a NIXL transfer request before the data moves."), 8)
    lay.add(timeseries("Bytes per transfer", [(_per_rank_mean("vllm:nixl_bytes_transferred"), rank)], "bytes",
                       "Mean KV bytes moved by one transfer over the rate interval."), 8)
    lay.add(timeseries("KV transfer throughput", [
        (f"rate(vllm:nixl_bytes_transferred_sum{{{WORKER}}}{RATE})", rank),
    ], "Bps", "KV bytes moved per second by NIXL."), 8)
    lay.add(timeseries("Transfers per second", [
        (f"rate(vllm:nixl_xfer_time_seconds_count{{{WORKER}}}{RATE})", rank),
    ], COUNT_UNIT, "NIXL KV transfers completed per second.", axis="transfers/s"), 8)
    lay.add(timeseries("Descriptors per transfer", [(_per_rank_mean("vllm:nixl_num_descriptors"), rank)],
                       COUNT_UNIT, "Mean NIXL descriptors (memory regions) per transfer: many small ones "
                       "cost post time.", axis="descriptors"), 8)
    lay.add(timeseries("Transfer failures and expired KV", [
        (f"increase(vllm:nixl_num_failed_transfers_total{{{WORKER}}}{RATE})", f"{rank} failed transfers"),
        (f"increase(vllm:nixl_num_failed_notifications_total{{{WORKER}}}{RATE})", f"{rank} failed notifications"),
        (f"increase(vllm:nixl_num_kv_expired_reqs_total{{{WORKER}}}{RATE})", f"{rank} expired KV"),
        (f"increase(vllm:nixl_num_notifications_after_expiry_total{{{WORKER}}}{RATE})",
         f"{rank} notifications after expiry"),
    ], COUNT_UNIT, "Events per rate interval. Failed transfers/notifications: UCX settings, side-channel "
       "ports. Expired KV: prefill released a request's KV after its lease before decode read it "
       "(docs/troubleshooting.md, 'Expired KV').", axis="events"), 24)
    lay.row("Process")
    lay.add(timeseries("Uptime", [
        ('time() - process_start_time_seconds{pool=~"$pool", instance=~"$instance"}', "{{instance}}"),
    ], "s", "Time since the instance's API server started (one process per instance, so not per rank); "
       "a drop to zero is a restart, also drawn as an annotation."), 24)
    return _dashboard("pd-instance", "vLLM PD: instance",
                      "Prefill and decode instances in detail, per data-parallel rank (vLLM's `engine` label).",
                      lay, [
                          variable_query("pool", "Pool", 'label_values(up{job=~"vllm-prefill|vllm-decode"}, pool)'),
                          variable_query("instance", "Instance", 'label_values(up{pool=~"$pool"}, instance)'),
                          variable_query("rank", "DP rank",
                                          'label_values(vllm:num_requests_running{pool=~"$pool", '
                                          'instance=~"$instance"}, engine)'),
                      ])


def gpus() -> dict:
    lay = Layout()
    sel = 'pool=~"$pool", instance=~"$host"'
    gpu = "{{host}} GPU {{gpu}}"
    lay.row("GPUs (dcgm-exporter)")
    lay.add(timeseries("GPU utilization", [(f"DCGM_FI_DEV_GPU_UTIL{{{sel}}}", gpu)], "percent",
                       "Share of time a kernel ran on the GPU (coarse: busy is not the same as efficient; "
                       "see tensor core activity)."), 8)
    lay.add(timeseries("Tensor core activity", [(f"DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{{{sel}}}", gpu)],
                       "percentunit", "Share of cycles the tensor pipes were active: the compute figure for "
                       "prefill."), 8)
    lay.add(timeseries("Memory bandwidth activity", [(f"DCGM_FI_PROF_DRAM_ACTIVE{{{sel}}}", gpu)],
                       "percentunit", "Share of cycles the memory interface was busy: the figure decode is "
                       "bound by."), 8)
    lay.add(timeseries("Framebuffer used", [
        (f"DCGM_FI_DEV_FB_USED{{{sel}}} / (DCGM_FI_DEV_FB_USED{{{sel}}} + DCGM_FI_DEV_FB_FREE{{{sel}}})", gpu)],
        "percentunit", "GPU memory in use: vLLM takes gpu-memory-utilization of it at start."), 8)
    lay.add(timeseries("Power", [(f"DCGM_FI_DEV_POWER_USAGE{{{sel}}}", gpu)], "watt",
                       "Board power draw per GPU; prefill runs near the limit under load, decode below it."), 8)
    lay.add(timeseries("Temperature", [(f"DCGM_FI_DEV_GPU_TEMP{{{sel}}}", gpu)], "celsius",
                       "GPU die temperature; a GPU that throttles shows here before in throughput."), 8)
    lay.add(timeseries("NVLink bandwidth counter", [
        (f"rate(DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL{{{sel}}}{RATE})", gpu)], COUNT_UNIT,
        "Rate of DCGM's NVLink bandwidth counter summed over lanes. DCGM does not state the counter's unit "
        "for every GPU generation, so this is shown as its rate, not as bytes/s.",
        axis="counter increase/s"), 12)
    lay.add(stat("Last XID error", [(f"max by (host) (DCGM_FI_DEV_XID_ERRORS{{{sel}}})", "{{host}}")], "none",
                 "The last XID error code a GPU of the host reported (0: none). Look the code up in NVIDIA's "
                 "XID catalogue; 79 (fallen off the bus) and 48 (double-bit ECC) need a drain.",
                 thresholds=[(None, "green"), (1, "red")]), 12)
    return _dashboard("pd-gpus", "vLLM PD: GPUs", "GPU metrics of the prefill and decode nodes from DCGM.", lay, [
        variable_query("pool", "Pool", 'label_values(up{job="dcgm"}, pool)'),
        variable_query("host", "Host", 'label_values(up{job="dcgm", pool=~"$pool"}, instance)'),
    ])


def dashboards() -> dict[str, dict]:
    """File name -> dashboard JSON document."""
    return {"pd-overview.json": overview(), "pd-instance.json": instance(), "pd-gpus.json": gpus()}


def expressions(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, expr) of every query in a dashboard, variables and
    annotations included."""
    found = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
    found += [(f"annotation {a['name']}", a["expr"]) for a in dashboard["annotations"]["list"] if "expr" in a]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            found.append((f"variable {var['name']}", var["query"]["query"]))
    return found


def concrete(expr: str, variables: dict[str, str] | None = None) -> str:
    """The expression Prometheus would receive, with every template variable
    set to match all (or to the given values)."""
    label_values = re.fullmatch(r"label_values\((.*), *\w+\)", expr)
    if label_values:
        expr = label_values.group(1)
    for name, value in BUILTINS.items():
        expr = expr.replace(name, value)
    return re.sub(r"\$(\w+)", lambda m: (variables or {}).get(m.group(1), ".+"), expr)
