"""Grafana dashboards for disaggregated serving, generated as data.

Three dashboards: the cluster overview (per-pool figures from the recording
rules in monitoring.py), one instance (templated on pool and instance, raw
vLLM series), and the GPUs (dcgm-exporter). Every PromQL expression here is
listed by `expressions()` so tests check it with promtool and the lab
evaluates it through Prometheus' query API; nobody hand-edits the JSON.
"""

from __future__ import annotations

import re

DATASOURCE_UID = "pd-prometheus"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_VERSION = 39
# dcgm-exporter fields the GPU dashboard reads (all in dcgm-exporter's
# default counters); the lab has no GPU, so they only exist on hardware.
DCGM_METRICS = (
    "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "DCGM_FI_PROF_DRAM_ACTIVE",
    "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", "DCGM_FI_DEV_XID_ERRORS",
)
WORKER = 'pool=~"$pool", instance=~"$instance"'
# Grafana's own variables, and what tests substitute for them.
BUILTINS = {"$__rate_interval": "1m"}


class _Layout:
    """Panels on Grafana's 24-column grid, filled left to right."""

    def __init__(self) -> None:
        self.panels: list[dict] = []
        self.x = self.y = 0
        self.row_height = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append({"type": "row", "title": title, "collapsed": False, "panels": [],
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "id": len(self.panels) + 1})
        self.y += 1

    def _newline(self) -> None:
        if self.x:
            self.y += self.row_height
            self.x, self.row_height = 0, 0

    def add(self, panel: dict, width: int, height: int = 8) -> None:
        if self.x + width > 24:
            self._newline()
        panel["gridPos"] = {"h": height, "w": width, "x": self.x, "y": self.y}
        panel["id"] = len(self.panels) + 1
        self.panels.append(panel)
        self.x += width
        self.row_height = max(self.row_height, height)


def _targets(queries: list[tuple[str, str]]) -> list[dict]:
    return [{"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + i)}
            for i, (expr, legend) in enumerate(queries)]


def timeseries(title: str, queries: list[tuple[str, str]], unit: str, description: str = "") -> dict:
    return {
        "type": "timeseries", "title": title, "description": description, "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit, "custom": {"lineWidth": 1, "fillOpacity": 10}},
                        "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                    "tooltip": {"mode": "multi"}},
        "targets": _targets(queries),
    }


def stat(title: str, queries: list[tuple[str, str]], unit: str, description: str = "",
         thresholds: list[tuple[float | None, str]] | None = None) -> dict:
    steps = [{"value": v, "color": c} for v, c in (thresholds or [(None, "green")])]
    return {
        "type": "stat", "title": title, "description": description, "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
                        "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "value", "graphMode": "area", "textMode": "auto"},
        "targets": _targets(queries),
    }


def _variable_datasource() -> dict:
    return {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
            "current": {"text": "Prometheus", "value": DATASOURCE_UID}, "hide": 0}


def _variable_query(name: str, label: str, query: str) -> dict:
    return {"name": name, "label": label, "type": "query", "datasource": DATASOURCE,
            "query": {"query": query, "refId": f"{name}-values"}, "definition": query,
            "refresh": 2, "includeAll": True, "multi": True, "allValue": ".+",
            "current": {"text": "All", "value": "$__all"}, "sort": 1, "hide": 0}


def _dashboard(uid: str, title: str, description: str, layout: _Layout, variables: list[dict]) -> dict:
    return {
        "uid": uid, "title": title, "description": description, "tags": ["vllm", "disaggregated", "pd"],
        "schemaVersion": SCHEMA_VERSION, "version": 1, "editable": False, "graphTooltip": 1,
        "time": {"from": "now-1h", "to": "now"}, "refresh": "30s", "timezone": "",
        "templating": {"list": [_variable_datasource(), *variables]},
        "annotations": {"list": []}, "links": [], "panels": layout.panels,
    }


def overview() -> dict:
    lay = _Layout()
    lay.row("Throughput: tokens per GPU per second (TPGS)")
    lay.add(timeseries("TPGS per pool, measured vs published", [
        ("pool:vllm_tokens_per_gpu:rate1m", "{{pool}} measured"),
        ("pool:pd_tpgs_reference:value", "{{pool}} published (GB200)"),
    ], "short", "Prefill: prompt tokens/s per prefill GPU. Decode: generated tokens/s per decode GPU. "
       "GPU counts come from the plan."), 16)
    lay.add(stat("TPGS vs published", [("pool:vllm_tokens_per_gpu:reference_ratio", "{{pool}}")],
                 "percentunit"), 8)
    lay.add(timeseries("Tokens per second", [
        ("pool:vllm_prompt_tokens:rate1m", "{{pool}} prompt"),
        ("pool:vllm_generation_tokens:rate1m", "{{pool}} generated"),
        ("pool:vllm_external_kv_tokens:rate1m", "{{pool}} received by KV transfer"),
    ], "short"), 12)
    lay.add(timeseries("Requests per second", [
        ("job:vllm_router_requests:rate1m", "router"),
        ("pool:vllm_requests_success:rate1m", "{{pool}} finished"),
        ("job:vllm_router_errors:rate1m", "router errors"),
    ], "reqps"), 12)
    lay.row("Latency")
    lay.add(timeseries("Time to first token", [
        ("pool:vllm_time_to_first_token_seconds:quantile5m", "{{pool}} p{{quantile}}"),
    ], "s"), 8)
    lay.add(timeseries("Inter-token latency", [
        ("pool:vllm_inter_token_latency_seconds:quantile5m", "{{pool}} p{{quantile}}"),
    ], "s"), 8)
    lay.add(timeseries("End-to-end request latency", [
        ("pool:vllm_e2e_request_latency_seconds:quantile5m", "{{pool}} p{{quantile}}"),
        ("job:vllm_router_pd_request_duration_seconds:quantile5m", "router p{{quantile}}"),
    ], "s"), 8)
    lay.row("Queues and KV cache")
    lay.add(timeseries("Requests waiting and running", [
        ("pool:vllm_requests_waiting:sum", "{{pool}} waiting"),
        ("pool:vllm_requests_running:sum", "{{pool}} running"),
    ], "short", "Prefill waiting while decode idles: add prefill. The reverse: add decode."), 8)
    lay.add(timeseries("KV cache usage", [
        ("pool:vllm_kv_cache_usage:max", "{{pool}} max"),
        ("pool:vllm_kv_cache_usage:avg", "{{pool}} avg"),
    ], "percentunit"), 8)
    lay.add(timeseries("Prefix cache hit rate", [
        ("pool:vllm_prefix_cache_hit:ratio5m", "{{pool}}"),
    ], "percentunit"), 8)
    lay.row("KV transfer (NIXL)")
    lay.add(timeseries("Transfer time", [
        ("pool:vllm_nixl_xfer_time_seconds:quantile5m", "{{pool}} p{{quantile}}"),
    ], "s"), 8)
    lay.add(timeseries("Transfers and bytes", [
        ("pool:vllm_nixl_transfers:rate1m", "{{pool}} transfers/s"),
        ("pool:vllm_nixl_bytes:rate1m", "{{pool}} bytes/s"),
    ], "short"), 8)
    lay.add(stat("Failed transfers (5m)", [("pool:vllm_nixl_failed_transfers:increase5m", "{{pool}}")], "short",
                 thresholds=[(None, "green"), (1, "red")]), 8)
    lay.row("Health")
    lay.add(stat("Instances up", [("pool:up:sum", "{{pool}} up"), ("pool:up:count", "{{pool}} planned")],
                 "short"), 8)
    lay.add(stat("Router: unhealthy workers", [("job:vllm_router_unhealthy_workers:sum", "unhealthy")], "short",
                 thresholds=[(None, "green"), (1, "red")]), 8)
    lay.add(timeseries("Router worker health", [("vllm_router_worker_health", "{{worker}}")], "short"), 8)
    return _dashboard("pd-overview", "vLLM PD: cluster overview",
                      "Disaggregated prefill/decode serving: per-pool throughput, latency, queues, KV transfer.",
                      lay, [])


def instance() -> dict:
    lay = _Layout()
    rate = "[$__rate_interval]"
    lay.row("Load")
    lay.add(timeseries("Tokens per second", [
        (f"rate(vllm:prompt_tokens_total{{{WORKER}}}{rate})", "{{instance}} prompt"),
        (f"rate(vllm:generation_tokens_total{{{WORKER}}}{rate})", "{{instance}} generated"),
        (f'rate(vllm:prompt_tokens_by_source_total{{{WORKER}, source="external_kv_transfer"}}{rate})',
         "{{instance}} received by KV transfer"),
    ], "short"), 12)
    lay.add(timeseries("Requests waiting and running", [
        (f"vllm:num_requests_waiting{{{WORKER}}}", "{{instance}} waiting"),
        (f"vllm:num_requests_running{{{WORKER}}}", "{{instance}} running"),
    ], "short"), 12)
    lay.row("Latency")
    for title, metric in (("Time to first token p99", "vllm:time_to_first_token_seconds"),
                          ("Inter-token latency p99", "vllm:inter_token_latency_seconds"),
                          ("Queue time p99", "vllm:request_queue_time_seconds")):
        lay.add(timeseries(title, [
            (f"histogram_quantile(0.99, sum by (instance, le) (rate({metric}_bucket{{{WORKER}}}{rate})))",
             "{{instance}}"),
        ], "s"), 8)
    lay.row("KV cache and transfer")
    lay.add(timeseries("KV cache usage", [(f"vllm:kv_cache_usage_perc{{{WORKER}}}", "{{instance}}")],
                       "percentunit"), 8)
    lay.add(timeseries("NIXL transfer time p99", [
        (f"histogram_quantile(0.99, sum by (instance, le) (rate(vllm:nixl_xfer_time_seconds_bucket{{{WORKER}}}"
         f"{rate})))", "{{instance}}"),
    ], "s"), 8)
    lay.add(timeseries("Failures and preemptions", [
        (f"increase(vllm:nixl_num_failed_transfers_total{{{WORKER}}}{rate})", "{{instance}} KV transfer failures"),
        (f"increase(vllm:num_preemptions_total{{{WORKER}}}{rate})", "{{instance}} preemptions"),
    ], "short"), 8)
    return _dashboard("pd-instance", "vLLM PD: instance", "One prefill or decode instance in detail.", lay, [
        _variable_query("pool", "Pool", 'label_values(up{job=~"vllm-prefill|vllm-decode"}, pool)'),
        _variable_query("instance", "Instance", 'label_values(up{pool=~"$pool"}, instance)'),
    ])


def gpus() -> dict:
    lay = _Layout()
    sel = 'pool=~"$pool", instance=~"$host"'
    lay.row("GPUs (dcgm-exporter)")
    lay.add(timeseries("GPU utilization", [(f"DCGM_FI_DEV_GPU_UTIL{{{sel}}}", "{{host}} GPU {{gpu}}")],
                       "percent"), 8)
    lay.add(timeseries("Tensor core activity", [
        (f"DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{{{sel}}}", "{{host}} GPU {{gpu}}")], "percentunit"), 8)
    lay.add(timeseries("Memory bandwidth activity", [
        (f"DCGM_FI_PROF_DRAM_ACTIVE{{{sel}}}", "{{host}} GPU {{gpu}}")], "percentunit"), 8)
    lay.add(timeseries("Framebuffer used", [
        (f"DCGM_FI_DEV_FB_USED{{{sel}}} / (DCGM_FI_DEV_FB_USED{{{sel}}} + DCGM_FI_DEV_FB_FREE{{{sel}}})",
         "{{host}} GPU {{gpu}}")], "percentunit"), 8)
    lay.add(timeseries("Power", [(f"DCGM_FI_DEV_POWER_USAGE{{{sel}}}", "{{host}} GPU {{gpu}}")], "watt"), 8)
    lay.add(timeseries("Temperature", [(f"DCGM_FI_DEV_GPU_TEMP{{{sel}}}", "{{host}} GPU {{gpu}}")], "celsius"), 8)
    lay.add(timeseries("NVLink bandwidth", [
        (f"rate(DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL{{{sel}}}[$__rate_interval])", "{{host}} GPU {{gpu}}")],
        "short"), 12)
    lay.add(stat("XID errors", [(f"max by (host) (DCGM_FI_DEV_XID_ERRORS{{{sel}}})", "{{host}}")], "short",
                 thresholds=[(None, "green"), (1, "red")]), 12)
    return _dashboard("pd-gpus", "vLLM PD: GPUs", "GPU metrics of the prefill and decode nodes from DCGM.", lay, [
        _variable_query("pool", "Pool", 'label_values(up{job="dcgm"}, pool)'),
        _variable_query("host", "Host", 'label_values(up{job="dcgm", pool=~"$pool"}, instance)'),
    ])


def dashboards() -> dict[str, dict]:
    """File name -> dashboard JSON document."""
    return {"pd-overview.json": overview(), "pd-instance.json": instance(), "pd-gpus.json": gpus()}


def expressions(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, expr) of every query in a dashboard, variables included."""
    found = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
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
