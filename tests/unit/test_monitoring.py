"""Prometheus config, rules and Grafana dashboards generated from the plan,
checked with the real promtool (Debian's, the version monitoring hosts run)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from pd_planner import PlanError, build_plan, dashboards, monitoring

FIXTURES = ROOT / "tests" / "fixtures" / "metrics"
PROMTOOL_TESTS = ROOT / "tests" / "promtool"
# Series the rules and dashboards read that no lab scrape can contain: the
# lab has no GPU (DCGM), and vLLM registers the NIXL series per engine only
# with NixlConnector; `up` is Prometheus' own.
NOT_IN_SCRAPES = {"up", *dashboards.DCGM_METRICS}


def write_rules(plan: dict, directory: Path) -> list[Path]:
    paths = []
    for name, doc in monitoring.rule_files(plan).items():
        path = directory / name
        path.write_text(yaml.safe_dump(doc, sort_keys=False, width=1000))
        paths.append(path)
    return paths


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def gb200_plan(gb200_spec):
    return build_plan(gb200_spec)


@pytest.fixture(scope="module")
def lab_plan(lab_spec):
    return build_plan(lab_spec)


@pytest.mark.parametrize("which", ["gb200_plan", "lab_plan"])
def test_rules_pass_promtool_check(which, request, tmp_path, promtool):
    paths = write_rules(request.getfixturevalue(which), tmp_path)
    result = run(promtool, "check", "rules", *map(str, paths))
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_config_passes_promtool_check(gb200_plan, tmp_path, promtool):
    (tmp_path / "rules").mkdir()
    write_rules(gb200_plan, tmp_path / "rules")
    (tmp_path / "file_sd").mkdir()
    for job, targets in monitoring.file_sd(gb200_plan).items():
        (tmp_path / "file_sd" / f"{job}.json").write_text(json.dumps(targets))
    config = monitoring.prometheus_config(gb200_plan, str(tmp_path / "file_sd"), str(tmp_path / "rules"))
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = run(promtool, "check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    # Checked with every rule file found and no missing target file.
    assert "SUCCESS: 3 rule files found" in result.stdout
    assert "WARNING" not in result.stdout + result.stderr


def test_rule_unit_tests_pass(gb200_plan, tmp_path, promtool):
    """TPGS against the plan's GPU counts, quantiles, and every alert firing
    (and not firing) where it should, with its remedy text."""
    write_rules(gb200_plan, tmp_path)
    for test in PROMTOOL_TESTS.glob("*.test.yml"):
        shutil.copy(test, tmp_path)
    result = run(promtool, "test", "rules", *sorted(str(p) for p in tmp_path.glob("*.test.yml")))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_file_sd_labels_every_worker_target(gb200_plan):
    sd = monitoring.file_sd(gb200_plan)
    assert set(sd) == {"vllm-prefill", "vllm-decode", "vllm-router", "dcgm", "prometheus"}
    prefill = sd["vllm-prefill"]
    assert [e["labels"]["instance"] for e in prefill] == ["prefill-0", "prefill-1"]
    assert all({"pool", "instance", "kv_rank", "host", "gpus"} <= set(e["labels"]) for e in prefill)
    assert sd["vllm-decode"] == [{"targets": ["10.20.0.13:8200"], "labels": {
        "pool": "decode", "instance": "decode-0", "kv_rank": "2", "host": "gb200-tray-03", "gpus": "8"}}]


def test_plan_rules_follow_the_plan_when_it_grows(gb200_spec):
    """Scaling changes the per-pool GPU counts in pd-plan.yml only."""
    before = monitoring.rule_files(build_plan(gb200_spec))
    grown = json.loads(json.dumps(gb200_spec))
    grown["groups"]["prefill"].append("gb200-tray-09")
    grown["hosts"]["gb200-tray-09"] = {**grown["hosts"]["gb200-tray-01"], "address": "10.20.0.19"}
    after = monitoring.rule_files(build_plan(grown))
    assert before["pd-recording.yml"] == after["pd-recording.yml"]
    assert before["pd-alerts.yml"] == after["pd-alerts.yml"]
    gpus = {r["labels"]["pool"]: r["expr"] for r in after["pd-plan.yml"]["groups"][0]["rules"]
            if r["record"] == "pool:pd_gpus:sum"}
    assert gpus == {"prefill": "vector(12)", "decode": "vector(8)"}


@pytest.mark.parametrize(("key", "value", "valid"), [
    ("alert_for", "ten minutes", "Prometheus duration"),
    ("scrape_interval", "15", "Prometheus duration"),
    ("alert_kv_cache_usage", 95, "ratio above 0, at most 1"),
    ("alert_ttft_p99_seconds", 0, "number above 0"),
])
def test_bad_monitoring_settings_fail_the_plan(gb200_spec, key, value, valid):
    spec = json.loads(json.dumps(gb200_spec))
    spec["monitoring"] = {**(spec.get("monitoring") or {}), key: value}
    with pytest.raises(PlanError, match=rf"pd_monitoring\.{key} .*{valid}"):
        build_plan(spec)


# --- dashboards ---------------------------------------------------------------

def all_dashboard_expressions() -> list[tuple[str, str, str]]:
    return [(name, title, expr) for name, doc in dashboards.dashboards().items()
            for title, expr in dashboards.expressions(doc)]


def test_dashboard_expressions_pass_promtool(tmp_path, promtool):
    """Every panel and variable query is valid PromQL (as Prometheus receives
    it, with Grafana's variables filled in)."""
    exprs = all_dashboard_expressions()
    assert len(exprs) > 40
    rules = [{"record": f"pd_dashboard_expression_{i}", "expr": dashboards.concrete(expr)}
             for i, (_, _, expr) in enumerate(exprs)]
    path = tmp_path / "dashboards.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}, width=1000))
    result = run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def metric_names(expr: str) -> set[str]:
    """Series names an expression reads (not functions, keywords or labels)."""
    expr = re.sub(r'"[^"]*"', '""', expr)           # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)            # matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)           # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"[A-Za-z_]+\s*\(", "(", expr)     # function calls
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr))
    keywords = {"and", "or", "unless", "bool"}
    return {w for w in words if w not in keywords and not re.fullmatch(r"[0-9e]+", w)}


def scraped_names() -> set[str]:
    names = set()
    for path in FIXTURES.glob("*.prom"):
        for line in path.read_text().splitlines():
            if line and not line.startswith("#"):
                names.add(re.match(r"[^{ ]+", line).group(0))
    return names


def test_every_series_read_exists_in_a_real_scrape_or_a_rule(gb200_plan):
    """A misspelt metric would give an empty panel forever: every name the
    rules and dashboards read is recorded by a rule or was scraped from the
    real vLLM (NIXL) and vllm-router in the lab (tests/fixtures/metrics)."""
    files = monitoring.rule_files(gb200_plan)
    recorded = monitoring.recorded_names(files)
    scraped = scraped_names()
    assert {"vllm:prompt_tokens_total", "vllm_router_pd_requests_total"} <= scraped
    exprs = [r["expr"] for doc in files.values() for g in doc["groups"] for r in g["rules"]]
    exprs += [expr for _, _, expr in all_dashboard_expressions()]
    unknown = {name for expr in exprs for name in metric_names(dashboards.concrete(expr))}
    unknown -= recorded | scraped | NOT_IN_SCRAPES
    assert not unknown, f"read but never scraped or recorded: {sorted(unknown)}"


def test_dashboards_are_well_formed():
    for name, doc in dashboards.dashboards().items():
        assert name == f"{doc['uid']}.json"
        ids = [p["id"] for p in doc["panels"]]
        assert len(ids) == len(set(ids)), name
        defined = {v["name"] for v in doc["templating"]["list"]}
        for panel in doc["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, (name, panel["title"])
            refs = [t["refId"] for t in panel.get("targets", [])]
            assert len(refs) == len(set(refs)), (name, panel["title"])
            for target in panel.get("targets", []):
                used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval"}
                assert used <= defined, (name, panel["title"], used - defined)
        # No two panels overlap on the grid.
        cells = set()
        for panel in doc["panels"]:
            g = panel["gridPos"]
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in cells, (name, panel["title"])
                    cells.add((x, y))


def test_overview_shows_tpgs_against_the_published_figure(gb200_plan):
    overview = dashboards.overview()
    exprs = {t["expr"] for p in overview["panels"] for t in p.get("targets", [])}
    assert {"pool:vllm_tokens_per_gpu:rate1m", "pool:pd_tpgs_reference:value"} <= exprs
    # The overview's panels read recorded per-pool series (cheap at any
    # cluster size), plus the router's per-worker health gauge.
    recorded = monitoring.recorded_names(monitoring.rule_files(gb200_plan))
    read = {re.sub(r"\{.*\}$", "", expr) for expr in exprs}
    assert read - recorded == {"vllm_router_worker_health"}
