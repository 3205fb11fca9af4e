#!/usr/bin/env python3
"""The article's "Testing the Setup" and "Verify the proxy is routing
correctly", automated against a live deployment (playbooks/verify.yml).

Sends the article's chat request and a streaming one through the router with
the OpenAI client, then reads every instance's /metrics and asserts:
  - the prefill pool and the decode pool each counted the requests,
  - decode received the KV from prefill (NIXL: the prompt tokens counted with
    source="external_kv_transfer" rose),
  - running requests are back to zero everywhere.
Prints one line per instance; exits 1 naming what failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import urllib.request

PROMPT = "What is the time complexity of quicksort in the average case? Explain briefly."
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def scrape(url: str, timeout: float = 10) -> dict[str, list[tuple[str, float]]]:
    """metric name -> [(labels, value)] from a Prometheus text page."""
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        text = answer.read().decode()
    samples: dict[str, list[tuple[str, float]]] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            samples.setdefault(match.group(1), []).append((match.group(2) or "", float(match.group(3))))
    return samples


def total(samples: dict, name: str, label: str = "") -> float:
    return sum(value for labels, value in samples.get(name, []) if label in labels)


def snapshot(plan: dict) -> dict[str, dict]:
    found = {}
    for instance in plan["instances"]:
        try:
            found[instance["name"]] = scrape(instance["url"] + "/metrics")
        except OSError as exc:
            raise SystemExit(f"FAIL {instance['name']}: {instance['url']}/metrics unreachable: {exc}") from None
    return found


def main(argv: list[str]) -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--plan", required=True)
    cli.add_argument("--router-url", help="default: the plan's router URL")
    cli.add_argument("--api-key-env", default="", help="variable holding the router API key, if any")
    cli.add_argument("--timeout", type=float, default=120)
    cli.add_argument("--max-tokens", type=int, default=32)
    opts = cli.parse_args(argv)

    from openai import OpenAI

    with open(opts.plan, encoding="utf-8") as handle:
        plan = json.load(handle)
    router = (opts.router_url or plan["router"]["url"]).rstrip("/")
    model = plan["model"]["served_name"]
    api_key = os.environ.get(opts.api_key_env, "") if opts.api_key_env else ""
    client = OpenAI(base_url=router + "/v1", api_key=api_key or "not-required", timeout=opts.timeout,
                    max_retries=0)
    problems: list[str] = []

    before = snapshot(plan)
    started = time.monotonic()
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": PROMPT}],
        max_tokens=opts.max_tokens, temperature=0.6, stream=False)
    chat_s = time.monotonic() - started
    text = reply.choices[0].message.content or ""
    if not reply.choices or reply.usage is None or reply.usage.completion_tokens < 1:
        problems.append("chat: no completion tokens in the answer")
    print(f"chat       {chat_s:6.2f} s  {reply.usage.prompt_tokens if reply.usage else '?'} prompt + "
          f"{reply.usage.completion_tokens if reply.usage else '?'} completion tokens  id {reply.id}")

    started, first, chunks = time.monotonic(), None, 0
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": PROMPT}],
        max_tokens=opts.max_tokens, temperature=0.6, stream=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            chunks += 1
            first = first or time.monotonic() - started
    stream_s = time.monotonic() - started
    if chunks < 1:
        problems.append("streaming chat: no content chunks")
    print(f"streaming  {stream_s:6.2f} s  {chunks} content chunks, first after {first or 0:.2f} s")

    # Metrics settle a moment after the response ends.
    deadline = time.monotonic() + 15
    while True:
        after = snapshot(plan)
        running = {name: total(m, "vllm:num_requests_running") + total(m, "vllm:num_requests_waiting")
                   for name, m in after.items()}
        if not any(running.values()) or time.monotonic() > deadline:
            break
        time.sleep(1)

    counted = {"prefill": 0.0, "decode": 0.0}
    external = 0.0
    connector = plan["connector"]
    print(f"{'instance':<12} {'pool':<8} {'requests':>8} {'prompt tok':>10} {'gen tok':>8} "
          f"{'kv in (tok)':>11} {'running':>7}")
    for instance in plan["instances"]:
        name, pool = instance["name"], instance["role"]
        old, new = before[name], after[name]

        def delta(metric, label="", old=old, new=new):
            return total(new, metric, label) - total(old, metric, label)

        requests = delta("vllm:request_success_total")
        received = delta("vllm:prompt_tokens_by_source_total", 'source="external_kv_transfer"')
        counted[pool] += requests
        external += received if pool == "decode" else 0
        print(f"{name:<12} {pool:<8} {requests:>8.0f} {delta('vllm:prompt_tokens_total'):>10.0f} "
              f"{delta('vllm:generation_tokens_total'):>8.0f} {received:>11.0f} {running[name]:>7.0f}")
        if running[name]:
            problems.append(f"{name}: {running[name]:.0f} requests still running or waiting")
    for pool in ("prefill", "decode"):
        if counted[pool] < 2:
            problems.append(f"pool {pool} counted {counted[pool]:.0f} of the 2 requests (vllm:request_success_total)")
    if connector.startswith("Nixl") and external <= 0:
        problems.append("decode received no KV from prefill: "
                        'vllm:prompt_tokens_by_source_total{source="external_kv_transfer"} did not rise')
    return verdict(text, problems, f"OK: both requests served through {router} by prefill and decode"
                   + (f", {external:.0f} prompt tokens of KV moved by {connector}" if external else ""))


def verdict(answer: str, problems: list[str], ok_line: str) -> int:
    """Print the answer, then every problem (exit 1) or the OK line (exit 0)."""
    print(f"answer: {answer[:120]!r}")
    if problems:
        for problem in problems:
            print(f"FAIL {problem}")
        return 1
    print(ok_line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
