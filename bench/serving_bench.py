#!/usr/bin/env python3
"""Serving benchmark on a live lab (`make lab` first): the router's own cost.

Three ways to serve the same chat request, interleaved round by round so
drift hits all alike:
  router     through vllm-router in PD mode (prefill, KV over NIXL, decode)
  direct     the same prefill-then-decode sequence sent straight to the two
             instances, as the router does it (prefill with max_tokens=1 and
             do_remote_decode, then decode with the returned kv_transfer_params)
  single     one instance serving the whole request alone (decode-0, no
             disaggregation)
Prints requests/s and p50/p99 latency per mode, and router p50 / direct p50
(target <= 1.10).

    .venv/bin/python bench/serving_bench.py [--plan render/plan.json] [--rounds 60] [--concurrency 1]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import sys
import time

from pd_bench.loadgen import chat_body, post, remote_decode_request
from pd_bench.plan import load_plan

PROMPT = "What is the time complexity of quicksort in the average case? Explain briefly."


def chat(model: str, max_tokens: int) -> dict:
    return chat_body(model, max_tokens, PROMPT, temperature=0)


def via_router(plan: dict, model: str, max_tokens: int) -> None:
    post(plan["router"]["url"] + "/v1/chat/completions", chat(model, max_tokens))


def direct(plan: dict, model: str, max_tokens: int) -> None:
    prefill, decode = plan["router"]["prefill_urls"][0], plan["router"]["decode_urls"][0]
    first = chat(model, 1)
    first["kv_transfer_params"] = remote_decode_request()
    answer = post(prefill + "/v1/chat/completions", first)
    second = chat(model, max_tokens)
    second["kv_transfer_params"] = answer.get("kv_transfer_params")
    post(decode + "/v1/chat/completions", second)


def single(plan: dict, model: str, max_tokens: int) -> None:
    post(plan["router"]["decode_urls"][0] + "/v1/chat/completions", chat(model, max_tokens))


MODES = {"router": via_router, "direct": direct, "single": single}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main(argv: list[str]) -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--plan")
    cli.add_argument("--rounds", type=int, default=60)
    cli.add_argument("--concurrency", type=int, default=1)
    cli.add_argument("--max-tokens", type=int, default=16)
    cli.add_argument("--warmup", type=int, default=3)
    opts = cli.parse_args(argv)
    plan = load_plan(opts.plan)
    model = plan["model"]["served_name"]
    for mode in MODES.values():
        for _ in range(opts.warmup):
            mode(plan, model, opts.max_tokens)
    latencies: dict[str, list[float]] = {m: [] for m in MODES}
    walls: dict[str, float] = dict.fromkeys(MODES, 0.0)
    failures: dict[str, int] = dict.fromkeys(MODES, 0)

    def timed(mode: str) -> float | None:
        started = time.perf_counter()
        try:
            MODES[mode](plan, model, opts.max_tokens)
        except OSError:
            return None
        return time.perf_counter() - started

    with concurrent.futures.ThreadPoolExecutor(opts.concurrency) as pool:
        for _ in range(opts.rounds):
            for mode in MODES:
                started = time.perf_counter()
                for result in pool.map(timed, [mode] * opts.concurrency):
                    if result is None:
                        failures[mode] += 1
                    else:
                        latencies[mode].append(result)
                walls[mode] += time.perf_counter() - started
    print(f"serving benchmark: {opts.rounds} rounds x {opts.concurrency} concurrent, {opts.max_tokens} output "
          f"tokens, model {model}, connector {plan['connector']}")
    print(f"{'mode':<8} {'requests':>8} {'failed':>6} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for mode in MODES:
        done = latencies[mode]
        rate = len(done) / walls[mode] if walls[mode] else 0.0
        print(f"{mode:<8} {len(done):>8} {failures[mode]:>6} {rate:>7.2f} {1000 * statistics.median(done):>8.1f} "
              f"{1000 * percentile(done, 0.99):>8.1f}")
    ratio = statistics.median(latencies["router"]) / statistics.median(latencies["direct"])
    print(f"router p50 / direct p50 = {ratio:.3f} (target <= 1.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
