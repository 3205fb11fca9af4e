"""Prometheus configuration and rules, as data, from the plan.

Everything here is a pure function of the plan (no Ansible): the
Prometheus role dumps the results to YAML/JSON, promtool validates them
before they land, and tests run the same rules through `promtool test rules`.

Labels every vLLM and router series carries (set by the file_sd targets):
`pool` (prefill, decode, router, monitoring), `instance` (the plan's instance
name, e.g. prefill-0), `host`, and for workers `kv_rank` and `gpus`.
Recording rules follow Prometheus' `level:metric:operations` naming.
"""

from __future__ import annotations

POOL_JOBS = 'job=~"vllm-prefill|vllm-decode"'
QUANTILES = ("0.5", "0.9", "0.99")
# Metric names of vLLM 0.32/0.33 and vllm-router 0.1.17 (checked against real
# scrapes in tests/fixtures/metrics).
PROMPT_TOKENS = "vllm:prompt_tokens_total"
GENERATION_TOKENS = "vllm:generation_tokens_total"


def file_sd(plan: dict) -> dict[str, list[dict]]:
    """One file_sd document per scrape job: [{targets: [addr], labels: {...}}]."""
    return {
        job["job_name"]: [{"targets": [t["target"]], "labels": dict(t["labels"])} for t in job["targets"]]
        for job in plan["scrape"]["jobs"]
    }


def prometheus_config(plan: dict, file_sd_dir: str, rules_dir: str) -> dict:
    """prometheus.yml: jobs read their targets from file_sd files, so scaling
    rewrites those files (Prometheus watches them) and never this one."""
    monitoring = plan["scrape"]["monitoring"]
    return {
        "global": {
            "scrape_interval": monitoring["scrape_interval"],
            "evaluation_interval": monitoring["scrape_interval"],
        },
        "rule_files": [f"{rules_dir}/*.yml"],
        "scrape_configs": [
            {
                "job_name": job["job_name"],
                "metrics_path": job["metrics_path"],
                "file_sd_configs": [{"files": [f"{file_sd_dir}/{job['job_name']}.json"]}],
                # Ray Serve mode renames Ray's ray_vllm_* back to vllm:* (rayserve.py).
                **({"metric_relabel_configs": job["metric_relabel_configs"]}
                   if "metric_relabel_configs" in job else {}),
            }
            for job in plan["scrape"]["jobs"]
        ],
    }


def _rule(record: str, expr: str, **labels: str) -> dict:
    rule = {"record": record, "expr": expr}
    if labels:
        rule["labels"] = labels
    return rule


def _quantiles(record: str, histogram: str, by: str, selector: str = "") -> list[dict]:
    return [
        _rule(record, f"histogram_quantile({q}, sum by ({by}, le) (rate({histogram}_bucket{selector}[5m])))",
              quantile=q)
        for q in QUANTILES
    ]


def _mean(record: str, histogram: str, window: str = "5m") -> dict:
    """Mean of a histogram per pool: unlike quantiles, means add up, so the
    TTFT split can stack them."""
    return _rule(record, f"sum by (pool) (rate({histogram}_sum[{window}]))"
                         f" / sum by (pool) (rate({histogram}_count[{window}]))")


def plan_rules(plan: dict) -> dict:
    """Rules whose numbers come from the plan and the inventory: GPUs per pool
    and the published reference figures. Scaling rewrites this file (a reload)."""
    monitoring = plan["scrape"]["monitoring"]
    rules = [_rule("pool:pd_gpus:sum", f"vector({gpus})", pool=pool)
             for pool, gpus in plan["scrape"]["pool_gpus"].items()]
    rules += [
        _rule("pool:pd_tpgs_reference:value", f"vector({monitoring['tpgs_reference_prefill']})", pool="prefill"),
        _rule("pool:pd_tpgs_reference:value", f"vector({monitoring['tpgs_reference_decode']})", pool="decode"),
    ]
    return {"groups": [{"name": "pd-plan", "rules": rules}]}


def recording_rules() -> dict:
    """Per-pool serving figures: what the article and its operators watch."""
    pool = [
        _rule("pool:vllm_prompt_tokens:rate1m", f"sum by (pool) (rate({PROMPT_TOKENS}{{{POOL_JOBS}}}[1m]))"),
        _rule("pool:vllm_generation_tokens:rate1m",
              f"sum by (pool) (rate({GENERATION_TOKENS}{{{POOL_JOBS}}}[1m]))"),
        # TPGS, the article's figure: prefill counts prompt tokens, decode
        # generated tokens, each over the pool's GPUs from the plan.
        _rule("pool:vllm_tokens_per_gpu:rate1m",
              'pool:vllm_prompt_tokens:rate1m{pool="prefill"} / on (pool) pool:pd_gpus:sum'
              ' or pool:vllm_generation_tokens:rate1m{pool="decode"} / on (pool) pool:pd_gpus:sum'),
        _rule("pool:vllm_tokens_per_gpu:reference_ratio",
              "pool:vllm_tokens_per_gpu:rate1m / on (pool) pool:pd_tpgs_reference:value"),
        *_quantiles("pool:vllm_time_to_first_token_seconds:quantile5m", "vllm:time_to_first_token_seconds",
                    "pool"),
        *_quantiles("pool:vllm_inter_token_latency_seconds:quantile5m", "vllm:inter_token_latency_seconds",
                    "pool"),
        *_quantiles("pool:vllm_e2e_request_latency_seconds:quantile5m", "vllm:e2e_request_latency_seconds",
                    "pool"),
        _rule("pool:vllm_requests_success:rate1m", "sum by (pool) (rate(vllm:request_success_total[1m]))"),
        _rule("pool:vllm_requests_waiting:sum", "sum by (pool) (vllm:num_requests_waiting)"),
        _rule("pool:vllm_requests_waiting:avg", "avg by (pool) (vllm:num_requests_waiting)"),
        _rule("pool:vllm_requests_running:sum", "sum by (pool) (vllm:num_requests_running)"),
        # Every vLLM series carries `engine` (the data-parallel rank): the
        # busiest and idlest rank of a pool show an imbalance the sums hide.
        _rule("pool:vllm_requests_running:max", "max by (pool) (vllm:num_requests_running)"),
        _rule("pool:vllm_requests_running:min", "min by (pool) (vllm:num_requests_running)"),
        # Time to first token, split: time queued (on decode this includes
        # waiting for the KV from prefill, since vLLM schedules a request only
        # once its KV has arrived) and time from scheduling to the first token.
        _mean("pool:vllm_request_queue_time_seconds:mean5m", "vllm:request_queue_time_seconds"),
        _mean("pool:vllm_request_prefill_time_seconds:mean5m", "vllm:request_prefill_time_seconds"),
        _mean("pool:vllm_time_to_first_token_seconds:mean5m", "vllm:time_to_first_token_seconds"),
        # Restarts: the API server's start time changes when its unit restarts.
        _rule("pool:vllm_restarts:changes1h",
              f"sum by (pool) (changes(process_start_time_seconds{{{POOL_JOBS}}}[1h]))"),
        _rule("pool:vllm_kv_cache_usage:max", "max by (pool) (vllm:kv_cache_usage_perc)"),
        _rule("pool:vllm_kv_cache_usage:avg", "avg by (pool) (vllm:kv_cache_usage_perc)"),
        _rule("pool:vllm_prefix_cache_hit:ratio5m",
              "sum by (pool) (rate(vllm:prefix_cache_hits_total[5m]))"
              " / sum by (pool) (rate(vllm:prefix_cache_queries_total[5m]))"),
        # KV that decode received from prefill instead of computing it.
        _rule("pool:vllm_external_kv_tokens:rate1m",
              'sum by (pool) (rate(vllm:prompt_tokens_by_source_total{source="external_kv_transfer"}[1m]))'),
        _rule("pool:vllm_preemptions:rate5m", "sum by (pool) (rate(vllm:num_preemptions_total[5m]))"),
        _rule("pool:up:sum", f"sum by (pool) (up{{{POOL_JOBS}}})"),
        _rule("pool:up:count", f"count by (pool) (up{{{POOL_JOBS}}})"),
    ]
    nixl = [
        *_quantiles("pool:vllm_nixl_xfer_time_seconds:quantile5m", "vllm:nixl_xfer_time_seconds", "pool"),
        _rule("pool:vllm_nixl_transfers:rate1m", "sum by (pool) (rate(vllm:nixl_xfer_time_seconds_count[1m]))"),
        _rule("pool:vllm_nixl_bytes:rate1m", "sum by (pool) (rate(vllm:nixl_bytes_transferred_sum[1m]))"),
        *_quantiles("pool:vllm_nixl_post_time_seconds:quantile5m", "vllm:nixl_post_time_seconds", "pool"),
        _mean("pool:vllm_nixl_bytes_per_transfer:mean5m", "vllm:nixl_bytes_transferred"),
        _rule("pool:vllm_nixl_failed_transfers:increase5m",
              "sum by (pool) (increase(vllm:nixl_num_failed_transfers_total[5m]))"),
        _rule("pool:vllm_nixl_failed_notifications:increase5m",
              "sum by (pool) (increase(vllm:nixl_num_failed_notifications_total[5m]))"),
        # Prefill released a request's KV after its lease before decode read
        # it (docs/troubleshooting.md, "Expired KV"); vLLM counts these apart
        # from failed transfers.
        _rule("pool:vllm_nixl_kv_expired:increase5m",
              "sum by (pool) (increase(vllm:nixl_num_kv_expired_reqs_total[5m]))"),
        _rule("pool:vllm_nixl_notifications_after_expiry:increase5m",
              "sum by (pool) (increase(vllm:nixl_num_notifications_after_expiry_total[5m]))"),
    ]
    router = [
        _rule("job:vllm_router_requests:rate1m", "sum by (job) (rate(vllm_router_pd_requests_total[1m]))"),
        # The router creates its error counters at the first error: "or ... * 0"
        # keeps the series (at 0) before that.
        _rule("job:vllm_router_errors:rate1m",
              'sum by (job) (rate({__name__=~"vllm_router_pd_(prefill|decode|stream)_errors_total"}[1m]))'
              " or job:vllm_router_requests:rate1m * 0"),
        _rule("job:vllm_router_error:ratio1m", "job:vllm_router_errors:rate1m / job:vllm_router_requests:rate1m"),
        *_quantiles("job:vllm_router_pd_request_duration_seconds:quantile5m",
                    "vllm_router_pd_request_duration_seconds", "job"),
        # Workers the router counts as unhealthy (its health gauge is 0/1).
        _rule("job:vllm_router_unhealthy_workers:sum", "sum by (job) (1 - vllm_router_worker_health)"),
    ]
    return {"groups": [
        {"name": "pd-pool", "rules": pool},
        {"name": "pd-nixl", "rules": nixl},
        {"name": "pd-router", "rules": router},
    ]}


def _alert(name: str, expr: str, duration: str | None, severity: str, summary: str, description: str) -> dict:
    alert = {"alert": name, "expr": expr}
    if duration:
        alert["for"] = duration
    alert["labels"] = {"severity": severity}
    alert["annotations"] = {"summary": summary, "description": description}
    return alert


def alert_rules(plan: dict) -> dict:
    """Alerts that say what to do. Thresholds come from pd_monitoring."""
    m = plan["scrape"]["monitoring"]
    sustained, down = m["alert_for"], m["alert_down_for"]
    capacity = [
        _alert(
            "PDAddPrefillInstances",
            f'pool:vllm_requests_waiting:avg{{pool="prefill"}} > {m["alert_prefill_waiting"]}'
            f' and on () pool:vllm_requests_waiting:avg{{pool="decode"}} < 1'
            f' and on () pool:vllm_kv_cache_usage:max{{pool="decode"}} < {m["alert_idle_kv_usage"]}',
            sustained, "warning",
            "Prefill pool is the bottleneck: {{ $value | printf \"%.1f\" }} requests wait per prefill instance "
            "while decode is idle",
            "Add prefill instances: append GPU hosts to the prefill group (or raise pd_pool.instances) and "
            "rerun site.yml; running instances are not restarted.",
        ),
        _alert(
            "PDAddDecodeInstances",
            f'pool:vllm_requests_waiting:avg{{pool="decode"}} > {m["alert_decode_waiting"]}'
            f' and on () pool:vllm_requests_waiting:avg{{pool="prefill"}} < 1',
            sustained, "warning",
            "Decode pool is the bottleneck: {{ $value | printf \"%.1f\" }} requests wait per decode instance "
            "while prefill keeps up",
            "Add decode instances: append GPU hosts to the decode group (or raise pd_pool.instances) and "
            "rerun site.yml; running instances are not restarted.",
        ),
        _alert(
            "PDTimeToFirstTokenHigh",
            f'pool:vllm_time_to_first_token_seconds:quantile5m{{quantile="0.99"}} > {m["alert_ttft_p99_seconds"]}',
            sustained, "warning",
            "{{ $labels.pool }} pool: time to first token p99 is {{ $value | humanizeDuration }}",
            f"Over {m['alert_ttft_p99_seconds']} s. Check the prefill queue and KV transfer time; "
            "add prefill instances if prefill requests wait.",
        ),
        _alert(
            "PDInterTokenLatencyHigh",
            f'pool:vllm_inter_token_latency_seconds:quantile5m{{quantile="0.99"}} > {m["alert_itl_p99_seconds"]}',
            sustained, "warning",
            "{{ $labels.pool }} pool: inter-token latency p99 is {{ $value | humanizeDuration }}",
            f"Over {m['alert_itl_p99_seconds']} s. Decode instances are overloaded: add decode instances "
            "or lower their max-num-seqs.",
        ),
        _alert(
            "PDKVCacheNearlyFull",
            f"max by (pool, instance, host) (vllm:kv_cache_usage_perc) > {m['alert_kv_cache_usage']}",
            sustained, "warning",
            "{{ $labels.pool }} instance {{ $labels.instance }} KV cache is "
            "{{ $value | humanizePercentage }} full",
            "Requests will be preempted. Add instances to the {{ $labels.pool }} pool, or give it more KV "
            "(gpu-memory-utilization, kv-cache-dtype fp8).",
        ),
    ]
    health = [
        _alert(
            "PDInstanceDown",
            f"up{{{POOL_JOBS}}} == 0",
            down, "critical",
            "{{ $labels.pool }} instance {{ $labels.instance }} on {{ $labels.host }} is down",
            "On {{ $labels.host }}: systemctl status vllm-{{ $labels.instance }} and "
            "journalctl -u vllm-{{ $labels.instance }}; rerun site.yml to start it again.",
        ),
        _alert(
            "PDRouterDown",
            'up{job="vllm-router"} == 0',
            down, "critical",
            "vllm-router on {{ $labels.host }} is down: no request reaches the pools",
            "On {{ $labels.host }}: systemctl status vllm-router and journalctl -u vllm-router.",
        ),
        _alert(
            "PDRouterWorkerUnhealthy",
            "vllm_router_worker_health == 0",
            down, "critical",
            "vllm-router marks worker {{ $labels.worker }} unhealthy",
            "The router stopped sending it requests. Check that instance's /health and its unit's journal.",
        ),
        _alert(
            "PDRouterErrors",
            f"job:vllm_router_error:ratio1m > {m['alert_router_error_ratio']}",
            sustained, "warning",
            "vllm-router fails {{ $value | humanizePercentage }} of requests",
            "Read journalctl -u vllm-router for the failing stage (prefill, decode, KV transfer).",
        ),
        # vllm-router 0.1.17 counts a request it could not place (503, "No
        # eligible P/D pair": no healthy prefill or decode worker) in
        # vllm_router_pd_errors_total{error_type="server_selection"}.
        _alert(
            "PDRouterNoAvailableWorker",
            'increase(vllm_router_pd_errors_total{error_type="server_selection"}[5m]) > 0',
            None, "critical",
            "vllm-router on {{ $labels.host }} refused {{ $value | printf \"%.0f\" }} requests in 5 minutes: "
            "no available worker",
            "A whole pool is ejected or empty: see PDRouterWorkerUnhealthy and PDInstanceDown, GET /workers "
            "on the router host, and each instance's /health.",
        ),
        _alert(
            "PDKVTransferFailures",
            "increase(vllm:nixl_num_failed_transfers_total[5m]) > 0",
            None, "warning",
            "{{ $labels.pool }} instance {{ $labels.instance }}: {{ $value | printf \"%.0f\" }} KV transfers "
            "failed in 5 minutes",
            "NIXL could not move KV between prefill and decode: check UCX_NET_DEVICES / UCX_TLS and the "
            "side-channel ports between the hosts; failed requests are recomputed or fail.",
        ),
    ]
    return {"groups": [{"name": "pd-capacity", "rules": capacity}, {"name": "pd-health", "rules": health}]}


def rule_files(plan: dict) -> dict[str, dict]:
    """Every rules file the monitoring host installs, by file name."""
    return {
        "pd-plan.yml": plan_rules(plan),
        "pd-recording.yml": recording_rules(),
        "pd-alerts.yml": alert_rules(plan),
    }


def recorded_names(files: dict[str, dict]) -> set[str]:
    return {r["record"] for doc in files.values() for g in doc["groups"] for r in g["rules"] if "record" in r}
