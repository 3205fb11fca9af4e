"""The plan summary every run prints: one line per pool, within 120 terminal
columns (the YAML callback indents a message by 8) however large the cluster."""

from __future__ import annotations

import copy

from pd_bench.specs import make_spec
from pd_planner import build_plan, plan_summary, plan_table
from pd_planner.table import SUMMARY_WIDTH

TERMINAL = 120
CALLBACK_INDENT = 8


def _shown(text: str) -> list[str]:
    return [" " * CALLBACK_INDENT + line for line in text.splitlines()]


def _pool_rows(text: str) -> dict[str, list[str]]:
    rows = [line.split() for line in text.splitlines()]
    return {row[0]: row for row in rows if row[:1] in (["prefill"], ["decode"])}


def test_summary_fits_the_terminal_on_the_gb200_sample(gb200_spec):
    plan = build_plan(gb200_spec)
    summary = plan_summary(plan)
    assert SUMMARY_WIDTH + CALLBACK_INDENT <= TERMINAL
    assert max(len(line) for line in _shown(summary)) <= TERMINAL, summary
    rows = _pool_rows(summary)
    for pool in ("prefill", "decode"):
        instances = [i for i in plan["instances"] if i["pool"] == pool]
        assert rows[pool][1] == str(len(instances))
        assert rows[pool][3] == str(sum(i["gpus_total"] for i in instances))


def test_summary_fits_the_terminal_at_288_trays():
    # bench/plan_bench.py's largest inventory: 144 prefill + 144 decode trays.
    plan = build_plan(make_spec(144, 144, cluster_cidr="10.20.0.0/16"))
    summary = plan_summary(plan)
    assert max(len(line) for line in _shown(summary)) <= TERMINAL, summary
    assert len(summary.splitlines()) <= 15
    rows = _pool_rows(summary)
    assert int(rows["prefill"][1]) + int(rows["decode"][1]) == len(plan["instances"])
    assert f"{len(plan['hosts'])} hosts" in summary
    # What it replaces: the full table has a row per instance node and every
    # scrape target on one line.
    table = plan_table(plan)
    assert len(table.splitlines()) > 300 and max(len(line) for line in table.splitlines()) > 1000


def test_a_long_line_is_cut_to_the_width(gb200_spec):
    spec = copy.deepcopy(gb200_spec)
    plan = build_plan(spec)
    plan["model"]["path"] = "/models/" + "x" * 300
    lines = plan_summary(plan).splitlines()
    assert len(lines[0]) == SUMMARY_WIDTH and lines[0].endswith("...")


def test_warnings_are_counted_not_listed(gb200_spec):
    plan = build_plan(gb200_spec)
    plan["warnings"] = ["pool prefill: host(s) a carry no instance", "pool decode: 2 GPU(s) on used hosts stay idle"]
    summary = plan_summary(plan)
    assert "2 warnings (printed as Ansible warnings)" in summary
    assert "carry no instance" not in summary
