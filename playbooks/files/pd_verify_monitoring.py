#!/usr/bin/env python3
"""Monitoring end to end against a live deployment (playbooks/verify.yml,
after its requests): through Prometheus' HTTP API, asserts that

  - every planned scrape target is up, with the plan's labels,
  - every recording and alert rule evaluates without error,
  - every recording rule and every dashboard expression returns data, except
    where this plan cannot produce the metric (no GPU node: DCGM; a connector
    other than NIXL: the NIXL series), which are listed with the reason,
  - the per-pool tokens per GPU (TPGS) is above zero after the traffic.

Prints one line per check; exits 1 naming what failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

# Runs on the controller (verify.yml: localhost, ansible_playbook_python), whose venv has pd_planner.
from pd_planner import dashboards, monitoring


def query(prometheus: str, expr: str) -> list[dict]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=15) as answer:
            body = json.loads(answer.read())
    except urllib.error.HTTPError as err:
        raise RuntimeError(json.loads(err.read()).get("error", str(err))) from err
    if body["status"] != "success":
        raise RuntimeError(body.get("error", body))
    return body["data"]["result"]


def api(prometheus: str, path: str) -> dict:
    with urllib.request.urlopen(f"{prometheus}{path}", timeout=15) as answer:
        return json.loads(answer.read())["data"]


def cannot_produce(plan: dict) -> dict[str, str]:
    """Text in an expression -> why this deployment cannot have its data."""
    reasons = {}
    jobs = {j["job_name"]: j for j in plan["scrape"]["jobs"]}
    if not jobs["dcgm"]["targets"]:
        reasons["DCGM_"] = reasons['job="dcgm"'] = "no GPU node in the plan (no dcgm-exporter)"
    if plan["connector"] != "NixlConnector":
        reasons["vllm:nixl_"] = f"connector is {plan['connector']}, not NIXL"
    if plan["router"]["mode"] == "discovery":
        # vllm-router keeps announced instances out of its registry: no
        # health checks, so no worker health gauge (dead workers show in
        # the workers' own `up` and PDInstanceDown).
        why = "router discovery: vllm-router does not health-check announced workers"
        reasons["vllm_router_worker_health"] = reasons["vllm_router_unhealthy_workers"] = why
    return reasons


def wait_for_targets(prometheus: str, plan: dict, timeout: float) -> list[str]:
    planned = {(j["job_name"], t["labels"]["instance"]): t for j in plan["scrape"]["jobs"] for t in j["targets"]}
    deadline = time.monotonic() + timeout
    while True:
        active = api(prometheus, "/api/v1/targets?state=active")["activeTargets"]
        seen = {(t["labels"].get("job"), t["labels"].get("instance")): t for t in active}
        failures = []
        for key, target in planned.items():
            live = seen.get(key)
            if live is None:
                failures.append(f"FAIL target {key[0]}/{key[1]} ({target['target']}) is not scraped")
            elif live["health"] != "up":
                failures.append(f"FAIL target {key[0]}/{key[1]} is {live['health']}: {live['lastError']}")
            elif any(live["labels"].get(k) != v for k, v in target["labels"].items()):
                failures.append(f"FAIL target {key[0]}/{key[1]} labels {live['labels']} differ from the plan")
        extra = sorted(set(seen) - set(planned))
        failures += [f"FAIL target {job}/{inst} is scraped but not in the plan" for job, inst in extra]
        if not failures or time.monotonic() > deadline:
            if not failures:
                print(f"ok   {len(planned)} targets up with the plan's labels")
            return failures
        time.sleep(2)


def wait_for_tpgs(prometheus: str, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        found = {r["metric"]["pool"]: float(r["value"][1])
                 for r in query(prometheus, "pool:vllm_tokens_per_gpu:rate1m")}
        if all(found.get(pool, 0) > 0 for pool in ("prefill", "decode")):
            print("ok   TPGS " + ", ".join(f"{p} {v:.2f} tokens/GPU/s" for p, v in sorted(found.items())))
            return []
        if time.monotonic() > deadline:
            return [f"FAIL TPGS per pool not above zero after the traffic: {found}"]
        time.sleep(2)


def check_rules(prometheus: str) -> list[str]:
    failures, count = [], 0
    for group in api(prometheus, "/api/v1/rules")["groups"]:
        for rule in group["rules"]:
            count += 1
            if rule["health"] != "ok":
                failures.append(f"FAIL rule {group['name']}/{rule['name']}: {rule['health']} {rule.get('lastError')}")
    if count == 0:
        failures.append("FAIL Prometheus has no rules loaded")
    elif not failures:
        print(f"ok   {count} rules evaluate without error")
    return failures


def check_expressions(prometheus: str, plan: dict) -> list[str]:
    files = monitoring.rule_files(plan)
    checks = [("recording rule", name, name) for name in sorted(monitoring.recorded_names(files))]
    for file_name, doc in dashboards.dashboards().items():
        for title, expr in dashboards.expressions(doc):
            checks.append((f"{file_name}: {title}", expr, dashboards.concrete(expr)))
    reasons = cannot_produce(plan)
    failures, with_data, without = [], 0, []
    for where, expr, concrete in checks:
        try:
            result = query(prometheus, concrete)
        except RuntimeError as err:
            failures.append(f"FAIL {where}: {expr}: {err}")
            continue
        reason = next((why for prefix, why in reasons.items() if prefix in concrete), None)
        if result:
            with_data += 1
        elif reason:
            without.append(f"     no data (expected: {reason}): {where}: {expr}")
        else:
            failures.append(f"FAIL {where}: no data: {expr}")
    print(f"ok   {with_data} of {len(checks)} expressions return data" if not failures
          else f"     {with_data} of {len(checks)} expressions return data")
    for line in without:
        print(line)
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", required=True)
    parser.add_argument("--prometheus-url", required=True)
    parser.add_argument("--timeout", type=float, default=90)
    args = parser.parse_args()
    plan = json.loads(Path(args.plan).read_text())
    prometheus = args.prometheus_url.rstrip("/")
    failures = wait_for_targets(prometheus, plan, args.timeout)
    failures += check_rules(prometheus)
    failures += wait_for_tpgs(prometheus, args.timeout)
    failures += check_expressions(prometheus, plan)
    for line in failures:
        print(line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
