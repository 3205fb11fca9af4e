"""The Grafana dashboards as an operator reads them: every panel explained,
one unit per panel and the right one, per-rank views, links between the
dashboards, restart annotations, and only metric names real vLLM exposes."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml
from conftest import ROOT
from pd_planner import build_plan, dashboards, monitoring

FIXTURES = ROOT / "tests" / "fixtures" / "metrics"
BOARDS = dashboards.dashboards()
# Grafana unit ids the dashboards may use (Grafana's "Standard options > Unit").
GRAFANA_UNITS = {"short", "none", "s", "percent", "percentunit", "bytes", "Bps", "reqps", "watt", "celsius"}
# Series no lab scrape can contain, each with why.
NOT_SCRAPED_IN_THE_LAB = {
    **{name: "dcgm-exporter runs on GPU nodes only; the lab has none" for name in dashboards.DCGM_METRICS},
    "up": "Prometheus' own series, not an exporter's",
}


def panels(doc: dict) -> list[dict]:
    return [p for p in doc["panels"] if p["type"] != "row"]


def all_panels() -> list[tuple[str, dict]]:
    return [(name, p) for name, doc in BOARDS.items() for p in panels(doc)]


def metric_names(expr: str) -> set[str]:
    """Series names a PromQL expression reads: not functions, keywords,
    label names or values, durations or numbers."""
    expr = re.sub(r'"[^"]*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"[A-Za-z_]+\s*\(", "(", expr)
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr))
    return {w for w in words if w not in {"and", "or", "unless", "bool"} and not re.fullmatch(r"[0-9e]+", w)}


def scraped_names() -> set[str]:
    names = set()
    for path in FIXTURES.glob("*.prom"):
        names |= {re.match(r"[^{ ]+", line).group(0) for line in path.read_text().splitlines()
                  if line and not line.startswith("#")}
    return names


def test_metric_parser_finds_series_not_functions():
    expr = ('histogram_quantile(0.99, sum by (instance, engine, le) '
            '(rate(vllm:nixl_xfer_time_seconds_bucket{pool=~".+", engine=~"0"}[1m])))'
            ' / on (pool) time() - process_start_time_seconds')
    assert metric_names(expr) == {"vllm:nixl_xfer_time_seconds_bucket", "process_start_time_seconds"}


def test_every_series_a_dashboard_reads_is_in_a_real_scrape_or_recorded(lab_spec):
    """The names come from real /metrics of the lab's vLLM 0.32 (prefill and
    decode, NIXL) and vllm-router 0.1.17; recorded names from the rules,
    whose own inputs tests/unit/test_monitoring.py checks the same way."""
    recorded = monitoring.recorded_names(monitoring.rule_files(build_plan(lab_spec)))
    scraped = scraped_names()
    assert {"vllm:nixl_num_kv_expired_reqs_total", "vllm:nixl_post_time_seconds_bucket",
            "vllm:request_prefill_time_seconds_sum", "process_start_time_seconds"} <= scraped
    unknown = {}
    for file_name, doc in BOARDS.items():
        for title, expr in dashboards.expressions(doc):
            for name in metric_names(dashboards.concrete(expr)) - recorded - scraped - set(NOT_SCRAPED_IN_THE_LAB):
                unknown.setdefault(name, []).append(f"{file_name}: {title}")
    assert not unknown, f"read but neither scraped from real vLLM/router nor recorded: {unknown}"


def test_every_dashboard_and_panel_says_what_it_shows():
    for name, doc in BOARDS.items():
        assert len(doc["description"]) > 20, name
    missing = [(name, p["title"]) for name, p in all_panels() if len(p.get("description", "")) < 20]
    assert not missing, f"panels without a description: {missing}"


def expected_unit(expr: str) -> str | None:
    """The unit an expression's value has, from what it reads; None for plain
    counts and ratios, which the panel's unit and axis label must say."""
    if "bytes" in expr:
        per_transfer = ("_sum" in expr and "_count" in expr) or ":mean" in expr
        return "bytes" if per_transfer else "Bps"
    if "seconds" in expr and not re.search(r"_seconds_count\b", expr):
        return "s"
    return None


def test_one_unit_per_panel_and_the_right_one():
    """Transfers/s and bytes/s on one unitless axis was the old overview's
    fault: each panel now has one Grafana unit, which matches what every
    query in it measures, and a panel of plain counts names them on its axis."""
    for name, panel in all_panels():
        where = (name, panel["title"])
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults["unit"] in GRAFANA_UNITS, where
        assert not [o for o in panel["fieldConfig"]["overrides"]
                    if any(p["id"] == "unit" for p in o.get("properties", []))], where
        units = {expected_unit(t["expr"]) for t in panel["targets"]}
        assert len(units) == 1, (where, units)
        unit = units.pop()
        if unit:
            assert defaults["unit"] == unit, (where, defaults["unit"], unit)
        if defaults["unit"] == "short":
            assert defaults["custom"]["axisLabel"], where


def test_a_count_panel_without_an_axis_label_is_refused():
    with pytest.raises(ValueError, match="names what it counts"):
        dashboards.timeseries("x", [("up", "")], "short", "a panel of plain counts")


def test_instance_dashboard_is_per_data_parallel_rank():
    """vLLM labels every series with `engine`, the data-parallel rank inside
    an instance: each instance-dashboard query of a vLLM series keeps it, so
    an unbalanced rank shows, and the `rank` variable selects ranks."""
    doc = dashboards.instance()
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["rank"]["query"]["query"].endswith(", engine)")
    vllm_targets = [(p["title"], t) for p in panels(doc) for t in p["targets"] if "vllm:" in t["expr"]]
    assert len(vllm_targets) > 20
    for title, target in vllm_targets:
        expr = target["expr"]
        assert 'engine=~"$rank"' in expr, title
        for clause in re.findall(r"\bby \(([^)]*)\)", expr):
            assert "engine" in clause.replace(" ", "").split(","), (title, expr)
        assert "{{engine}}" in target["legendFormat"], title


def test_overview_shows_rank_imbalance_per_pool(gb200_spec):
    rules = {r["record"]: r["expr"] for doc in monitoring.rule_files(build_plan(gb200_spec)).values()
             for g in doc["groups"] for r in g["rules"] if "record" in r}
    # Per rank within a pool: max/min over every series, each one rank.
    assert rules["pool:vllm_requests_running:max"] == "max by (pool) (vllm:num_requests_running)"
    exprs = [t["expr"] for p in panels(dashboards.overview()) for t in p["targets"]]
    assert {"pool:vllm_requests_running:max", "pool:vllm_requests_running:min"} <= set(exprs)


def test_nixl_panels_cover_time_size_post_failures_and_expired_kv():
    read = {name for doc in BOARDS.values() for _, expr in dashboards.expressions(doc)
            for name in metric_names(expr)}
    assert {"pool:vllm_nixl_xfer_time_seconds:quantile5m", "pool:vllm_nixl_post_time_seconds:quantile5m",
            "pool:vllm_nixl_bytes_per_transfer:mean5m", "pool:vllm_nixl_bytes:rate1m",
            "pool:vllm_nixl_transfers:rate1m", "pool:vllm_nixl_failed_transfers:increase5m",
            "pool:vllm_nixl_failed_notifications:increase5m", "pool:vllm_nixl_kv_expired:increase5m"} <= read
    instance = {name for _, expr in dashboards.expressions(dashboards.instance()) for name in metric_names(expr)}
    assert {"vllm:nixl_num_kv_expired_reqs_total", "vllm:nixl_num_notifications_after_expiry_total",
            "vllm:nixl_post_time_seconds_bucket", "vllm:nixl_bytes_transferred_sum",
            "vllm:nixl_bytes_transferred_count", "vllm:nixl_num_failed_transfers_total"} <= instance


def test_ttft_split_stacks_queue_prefill_transfer_and_first_decode_in_order():
    split = next(p for p in panels(dashboards.overview()) if p["title"].startswith("Time to first token, split"))
    assert split["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"
    assert [t["expr"] for t in split["targets"]] == [
        'pool:vllm_request_queue_time_seconds:mean5m{pool="prefill"}',
        'pool:vllm_request_prefill_time_seconds:mean5m{pool="prefill"}',
        'pool:vllm_request_queue_time_seconds:mean5m{pool="decode"}',
        'pool:vllm_request_prefill_time_seconds:mean5m{pool="decode"}',
    ]


def test_ttft_split_and_nixl_means_compute_what_they_say(gb200_spec, tmp_path, promtool):
    """The new recording rules through the real promtool: a mean is sum/count
    over 5 minutes; expired KV counts increase."""
    for name, doc in monitoring.rule_files(build_plan(gb200_spec)).items():
        (tmp_path / name).write_text(yaml.safe_dump(doc, sort_keys=False, width=1000))
    dec = 'job="vllm-decode", pool="decode", instance="decode-0", engine="0"'
    test = {
        "rule_files": ["pd-plan.yml", "pd-recording.yml"], "evaluation_interval": "15s",
        "tests": [{
            "interval": "15s",
            "input_series": [
                # 2 requests/15 s queued 0.5 s each (on decode: waiting for KV).
                {"series": f"vllm:request_queue_time_seconds_sum{{{dec}}}", "values": "0+1x40"},
                {"series": f"vllm:request_queue_time_seconds_count{{{dec}}}", "values": "0+2x40"},
                # 4 transfers/15 s of 1 MiB each.
                {"series": f"vllm:nixl_bytes_transferred_sum{{{dec}}}", "values": "0+4194304x40"},
                {"series": f"vllm:nixl_bytes_transferred_count{{{dec}}}", "values": "0+4x40"},
                {"series": f"vllm:nixl_num_kv_expired_reqs_total{{{dec}}}", "values": "0x20 1+1x3 4x16"},
            ],
            "promql_expr_test": [
                {"expr": "pool:vllm_request_queue_time_seconds:mean5m", "eval_time": "8m",
                 "exp_samples": [{"labels": 'pool:vllm_request_queue_time_seconds:mean5m{pool="decode"}',
                                  "value": 0.5}]},
                {"expr": "pool:vllm_nixl_bytes_per_transfer:mean5m", "eval_time": "8m",
                 "exp_samples": [{"labels": 'pool:vllm_nixl_bytes_per_transfer:mean5m{pool="decode"}',
                                  "value": 1048576}]},
                {"expr": "pool:vllm_nixl_kv_expired:increase5m", "eval_time": "6m",
                 "exp_samples": [{"labels": 'pool:vllm_nixl_kv_expired:increase5m{pool="decode"}',
                                  "value": 4}]},
            ],
        }],
    }
    (tmp_path / "split.test.yml").write_text(yaml.safe_dump(test, sort_keys=False))
    result = subprocess.run([promtool, "test", "rules", str(tmp_path / "split.test.yml")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dashboard_links_to_the_others():
    """By tag, as Grafana's dashboard links do: each dashboard's link lists
    every other PD dashboard, keeping the time range and shared variables."""
    for name, doc in BOARDS.items():
        (link,) = doc["links"]
        assert link["type"] == "dashboards" and link["keepTime"] and link["includeVars"], name
        listed = {other for other, d in BOARDS.items() if set(link["tags"]) <= set(d["tags"])}
        assert listed == set(BOARDS), (name, listed)
    # Per-pool overview panels open the instance dashboard on that pool.
    drill = [p for p in panels(dashboards.overview()) if p["fieldConfig"]["defaults"].get("links")]
    assert len(drill) > 10
    assert all("/d/pd-instance/" in p["fieldConfig"]["defaults"]["links"][0]["url"] for p in drill)


def test_restarts_and_down_targets_are_annotated_and_return_data_in_the_lab():
    """Grafana draws an event where the annotation query's value is >= 1, so
    the queries carry no `> 0` filter: they return a 0 series otherwise, which
    is what lets the lab check (pd_verify_monitoring.py) see them return data."""
    for name, doc in BOARDS.items():
        annotations = {a["name"]: a for a in doc["annotations"]["list"] if "expr" in a}
        restarts = annotations["vLLM restarts"]
        assert restarts["expr"].startswith("changes(process_start_time_seconds{"), name
        assert annotations["Targets down"]["expr"] == "1 - up", name
        assert all(a["enable"] and ">" not in a["expr"] for a in annotations.values()), name
        listed = {title for title, _ in dashboards.expressions(doc)}
        assert {"annotation vLLM restarts", "annotation Targets down"} <= listed, name


def test_dashboards_are_valid_grafana_json_for_the_pinned_schema():
    for name, doc in BOARDS.items():
        assert json.loads(json.dumps(doc)) == doc
        assert doc["schemaVersion"] == dashboards.SCHEMA_VERSION == 39, name
        for panel in panels(doc):
            assert panel["type"] in {"timeseries", "stat"}, (name, panel["title"])
            assert panel["datasource"]["uid"] == "${datasource}"
