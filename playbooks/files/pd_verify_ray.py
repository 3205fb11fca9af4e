#!/usr/bin/env python3
"""verify.yml in Ray Serve mode (pd_serving.mode rayserve): the same checks as
pd_verify.py, through the Serve ingress and Ray's metrics endpoints.

  1. health: Serve's REST API on the head (GET /api/serve/applications/, what
     `serve status` reads): application `pd` RUNNING, every deployment HEALTHY;
     the OpenAI API lists the planned model;
  2. a chat and a streaming chat request through the Serve ingress (OpenAI client);
  3. Ray's metrics endpoint on every Ray node (the plan's scrape targets):
     vLLM's engine metrics (exported by Ray as ray_vllm_*) of each pool's
     replicas counted both requests, decode received the KV from prefill
     (prompt tokens with source="external_kv_transfer" rose), and nothing is
     left running. A sample belongs to the pool whose Serve replica it names
     (vLLM labels each with ReplicaId; Serve's API maps replicas to deployments).
Prints one line per pool; exits 1 naming what failed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.request

from pd_verify import verdict  # beside this file: the same verdict lines as the router mode

PROMPT = "What is the time complexity of quicksort in the average case? Explain briefly."
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_REPLICA = re.compile(r'ReplicaId="([^"]*)"')
DEPLOYMENT_POOL = {"Prefill:prefill": "prefill", "Decode:decode": "decode"}


def get_json(url: str, timeout: float) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return json.loads(answer.read().decode())


def vllm_name(name: str) -> str:
    """Ray's export name of a vLLM metric back to vLLM's (as Prometheus'
    metric_relabel_configs of the plan do): ray_vllm_x -> vllm:x."""
    return "vllm:" + name[len("ray_vllm_"):] if name.startswith("ray_vllm_") else name


def scrape(urls: list[str], timeout: float) -> dict[str, list[tuple[str, float]]]:
    """metric name (vLLM's) -> [(labels, value)] over every Ray node."""
    samples: dict[str, list[tuple[str, float]]] = {}
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as answer:
                text = answer.read().decode()
        except OSError as exc:
            raise SystemExit(f"FAIL Ray metrics endpoint {url} unreachable: {exc}") from None
        for line in text.splitlines():
            match = _SAMPLE.match(line)
            if match:
                samples.setdefault(vllm_name(match.group(1)), []).append(
                    (match.group(2) or "", float(match.group(3))))
    return samples


def pool_total(samples: dict, name: str, replicas: set[str], label: str = "") -> float:
    """Sum of a metric over one pool's replicas (counters with or without _total)."""
    found = 0.0
    for metric in {name, name.removesuffix("_total")}:
        for labels, value in samples.get(metric, []):
            replica = _REPLICA.search(labels)
            if replica and replica.group(1) in replicas and label in labels:
                found += value
    return found


def serve_health(dashboard: str, app: str, timeout: float) -> tuple[dict[str, set[str]], list[str]]:
    """Serve's view of the application: replicas per pool, and what is unhealthy."""
    problems = []
    try:
        details = get_json(dashboard + "/api/serve/applications/", timeout)
    except OSError as exc:
        raise SystemExit(f"FAIL Serve REST API {dashboard}/api/serve/applications/ unreachable: {exc}") from None
    application = details.get("applications", {}).get(app)
    if application is None:
        names = sorted(details.get("applications", {}))
        raise SystemExit(f"FAIL Serve has no application {app!r} (applications: {names})")
    print(f"serve      application {app}: {application['status']}")
    if application["status"] != "RUNNING":
        problems.append(f"application {app} is {application['status']}: {application.get('message', '')[:300]}")
    replicas: dict[str, set[str]] = {"prefill": set(), "decode": set()}
    for name, deployment in sorted(application.get("deployments", {}).items()):
        running = [r for r in deployment.get("replicas", []) if r.get("state") == "RUNNING"]
        print(f"serve      deployment {name}: {deployment['status']}, {len(running)} replicas RUNNING")
        if deployment["status"] != "HEALTHY":
            problems.append(f"deployment {name} is {deployment['status']}: {deployment.get('message', '')[:300]}")
        if name in DEPLOYMENT_POOL:
            replicas[DEPLOYMENT_POOL[name]] = {r["replica_id"] for r in running}
    for pool, ids in replicas.items():
        if not ids:
            problems.append(f"pool {pool}: no RUNNING Serve replica")
    return replicas, problems


def main(argv: list[str]) -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--plan", required=True)
    cli.add_argument("--url", help="Serve's OpenAI API; default: the plan's rayserve.url")
    cli.add_argument("--dashboard-url", help="default: the plan's rayserve.dashboard_url")
    cli.add_argument("--metrics-url", action="append", default=[],
                     help="a Ray node's metrics page (repeatable); default: the plan's vLLM scrape targets")
    cli.add_argument("--timeout", type=float, default=120)
    cli.add_argument("--max-tokens", type=int, default=32)
    opts = cli.parse_args(argv)

    from openai import OpenAI

    with open(opts.plan, encoding="utf-8") as handle:
        plan = json.load(handle)
    ray = plan["rayserve"]
    url = (opts.url or ray["url"]).rstrip("/")
    dashboard = (opts.dashboard_url or ray["dashboard_url"]).rstrip("/")
    metrics = opts.metrics_url or sorted({
        f"http://{t['target']}/metrics" for job in plan["scrape"]["jobs"]
        if job["job_name"] in ("vllm-prefill", "vllm-decode") for t in job["targets"]})
    model = plan["model"]["served_name"]

    replicas, problems = serve_health(dashboard, "pd", opts.timeout)
    if problems:
        for problem in problems:
            print(f"FAIL {problem}")
        return 1
    models = [m["id"] for m in get_json(url + "/v1/models", opts.timeout).get("data", [])]
    print(f"models     {url}/v1/models: {models}")
    if model not in models:
        problems.append(f"/v1/models does not list {model!r}")

    client = OpenAI(base_url=url + "/v1", api_key="not-required", timeout=opts.timeout, max_retries=0)
    before = scrape(metrics, 10)
    started = time.monotonic()
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": PROMPT}],
        max_tokens=opts.max_tokens, temperature=0.6, stream=False)
    text = reply.choices[0].message.content or "" if reply.choices else ""
    if not reply.choices or reply.usage is None or reply.usage.completion_tokens < 1:
        problems.append("chat: no completion tokens in the answer")
    print(f"chat       {time.monotonic() - started:6.2f} s  "
          f"{reply.usage.prompt_tokens if reply.usage else '?'} prompt + "
          f"{reply.usage.completion_tokens if reply.usage else '?'} completion tokens")
    started, first, chunks = time.monotonic(), None, 0
    for chunk in client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": PROMPT}],
            max_tokens=opts.max_tokens, temperature=0.6, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            chunks += 1
            first = first or time.monotonic() - started
    if chunks < 1:
        problems.append("streaming chat: no content chunks")
    print(f"streaming  {time.monotonic() - started:6.2f} s  {chunks} content chunks, first after {first or 0:.2f} s")

    # Ray's agent exports what the replicas reported a few seconds ago.
    deadline = time.monotonic() + 60
    while True:
        after = scrape(metrics, 10)
        counted = {pool: pool_total(after, "vllm:request_success_total", ids)
                   - pool_total(before, "vllm:request_success_total", ids) for pool, ids in replicas.items()}
        if min(counted.values()) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(2)
    external = (pool_total(after, "vllm:prompt_tokens_by_source_total", replicas["decode"], "external_kv_transfer")
                - pool_total(before, "vllm:prompt_tokens_by_source_total", replicas["decode"], "external_kv_transfer"))
    print(f"{'pool':<8} {'replicas':>8} {'requests':>8} {'prompt tok':>10} {'gen tok':>8} {'running':>7}")
    for pool, ids in replicas.items():
        def delta(metric, ids=ids):
            return pool_total(after, metric, ids) - pool_total(before, metric, ids)
        running = (pool_total(after, "vllm:num_requests_running", ids)
                   + pool_total(after, "vllm:num_requests_waiting", ids))
        print(f"{pool:<8} {len(ids):>8} {counted[pool]:>8.0f} {delta('vllm:prompt_tokens_total'):>10.0f} "
              f"{delta('vllm:generation_tokens_total'):>8.0f} {running:>7.0f}")
        if counted[pool] < 2:
            problems.append(f"pool {pool} counted {counted[pool]:.0f} of the 2 requests (ray_vllm_request_success)")
        if running:
            problems.append(f"pool {pool}: {running:.0f} requests still running or waiting")
    if external <= 0:
        problems.append("decode received no KV from prefill: "
                        'vllm:prompt_tokens_by_source_total{source="external_kv_transfer"} did not rise')
    return verdict(text, problems, f"OK: both requests served through Serve at {url} by prefill and decode, "
                   f"{external:.0f} prompt tokens of KV moved by NIXL")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
