"""The load sweep's arithmetic, kept apart from any server or plotting library
so bench/load_sweep.py (which drives `vllm bench serve`) and its unit test
share it: which points a sweep runs, what each point's figures are (from the
result dict `vllm bench serve` returns), the result document's schema and the
table `make bench-serve` prints.

Standard library only: it is imported both from .venv and from .venv-vllm.
"""

from __future__ import annotations

import math

SCHEMA_VERSION = 1
MODES = ("router", "direct", "single")
MODE_TITLES = {
    "router": "through vllm-router (PD)",
    "direct": "prefill-then-decode sent directly",
    "single": "one instance alone",
}
# Percentiles asked of `vllm bench serve` (--metric-percentiles) and kept.
PERCENTILES = (50, 99)
LATENCY_METRICS = ("ttft", "itl", "tpot", "e2el")
POINT_KEYS = ("mode", "sweep", "max_concurrency", "request_rate", "num_prompts", "completed", "failed",
              "duration_s", "request_throughput", "output_throughput", "total_token_throughput",
              "tokens_per_gpu_s", "deployment_tokens_per_gpu_s", "gpus", "first_error",
              *(f"p{p}_{m}_ms" for m in LATENCY_METRICS for p in PERCENTILES))


class SweepError(ValueError):
    """A sweep setting or a result document that cannot be used."""


def parse_list(text: str, name: str, kind=int) -> list:
    """'1,2,4' -> [1, 2, 4]; every value positive, one clear error otherwise."""
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SweepError(f"{name}: {text!r} is not a comma-separated list of positive numbers") from None
    if not values or any(not v > 0 or math.isinf(v) for v in values):
        raise SweepError(f"{name}: {text!r} is not a comma-separated list of positive numbers")
    return values


def sweep_points(modes: list[str], concurrencies: list[int], rates: list[float], *,
                 prompts_per_slot: int = 4, min_prompts: int = 12, rate_seconds: float = 8) -> list[dict]:
    """The points of one sweep, modes interleaved at each load level so that
    drift on a shared machine hits every mode alike.

    Concurrency points send as fast as the slots free up (request rate inf);
    each gets `prompts_per_slot` requests per slot, at least `min_prompts`.
    Rate points send Poisson arrivals at the rate with no concurrency cap,
    about `rate_seconds` worth of requests, at least `min_prompts`.
    """
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise SweepError(f"modes: {','.join(unknown) or 'none given'} not valid; valid modes are {', '.join(MODES)}")
    points = []
    for concurrency in concurrencies:
        for mode in modes:
            points.append({"mode": mode, "sweep": "concurrency", "max_concurrency": concurrency,
                           "request_rate": None, "num_prompts": max(min_prompts, prompts_per_slot * concurrency)})
    for rate in rates:
        for mode in modes:
            points.append({"mode": mode, "sweep": "rate", "max_concurrency": None, "request_rate": rate,
                           "num_prompts": max(min_prompts, math.ceil(rate * rate_seconds))})
    return points


def pool_gpus(plan: dict) -> dict[str, float]:
    """GPUs behind each mode's figures: the plan's pool GPUs (the lab: one
    pinned CPU core per instance) and, for `single`, one decode instance's."""
    gpus = plan["scrape"]["pool_gpus"]
    decode_instances = len(plan["router"]["decode_urls"]) or 1
    return {"prefill": gpus["prefill"], "decode": gpus["decode"], "single": gpus["decode"] / decode_instances}


def point_figures(point: dict, result: dict, gpus: dict[str, float]) -> dict:
    """One sweep point's figures from the dict `vllm bench serve` returns.

    Tokens per GPU-second per pool follow the dashboards' TPGS rule: the
    prefill pool is credited with the prompt tokens, the decode pool with the
    generated tokens, each over the pool's GPUs and the point's wall time; one
    instance serving alone is credited with both. `deployment_tokens_per_gpu_s`
    is prompt + generated tokens over every GPU the mode uses, the figure that
    compares disaggregated serving with one instance fairly.
    """
    duration = result["duration"]
    prompt, generated = result["total_input_tokens"], result["total_output_tokens"]
    if point["mode"] == "single":
        per_pool = {"single": (prompt + generated) / (gpus["single"] * duration)}
        used = gpus["single"]
    else:
        per_pool = {"prefill": prompt / (gpus["prefill"] * duration),
                    "decode": generated / (gpus["decode"] * duration)}
        used = gpus["prefill"] + gpus["decode"]
    errors = [e for e in result.get("errors") or [] if e]
    figures = {
        **point,
        "completed": result["completed"],
        "failed": result.get("failed", 0),
        "duration_s": duration,
        "request_throughput": result["request_throughput"],
        "output_throughput": result["output_throughput"],
        "total_token_throughput": result["total_token_throughput"],
        "tokens_per_gpu_s": per_pool,
        "deployment_tokens_per_gpu_s": (prompt + generated) / (used * duration),
        "gpus": used,
        "first_error": errors[0].strip().splitlines()[-1][:300] if errors else None,
    }
    for metric in LATENCY_METRICS:
        for p in PERCENTILES:
            figures[f"p{p}_{metric}_ms"] = result.get(f"p{p}_{metric}_ms")
    return figures


def check_document(doc: dict) -> dict:
    """The result document as load_sweep.py writes it, or one error naming
    what is missing (the plot and the report read nothing else)."""
    for key in ("schema_version", "tool", "settings", "gpu_unit", "gpus", "points"):
        if key not in doc:
            raise SweepError(f"load sweep result: key {key!r} missing")
    if doc["schema_version"] != SCHEMA_VERSION:
        raise SweepError(f"load sweep result: schema_version {doc['schema_version']!r}, this code reads "
                         f"{SCHEMA_VERSION}")
    for index, point in enumerate(doc["points"]):
        missing = [k for k in POINT_KEYS if k not in point]
        if missing:
            raise SweepError(f"load sweep result: point {index} lacks {', '.join(missing)}")
        if point["mode"] not in MODES:
            raise SweepError(f"load sweep result: point {index} has mode {point['mode']!r}; valid: {', '.join(MODES)}")
    return doc


def _ms(value) -> str:
    return "-" if value is None else f"{value:.0f}"


def report_lines(doc: dict) -> list[str]:
    """The figures as a table of at most 120 columns, one line per point
    (end-to-end latencies and the exact `vllm bench serve` arguments are in
    the JSON)."""
    check_document(doc)
    unit = doc["gpu_unit"]
    settings = doc["settings"]
    lines = [f"load sweep: {doc['tool']}, model {settings['model']}, {settings['input_len']} prompt + "
             f"{settings['output_len']} output tokens per request",
             f"latencies in ms; tok/{unit}-s: tokens per {unit}-second over all the mode's {unit}s, then per pool",
             f"{'mode':<7}{'load':>7}{'ok':>5}{'fail':>5}{'req/s':>7}{'out tok/s':>10}"
             f"{'TTFT p50':>9}{'p99':>7}{'ITL p50':>8}{'p99':>7}{f'tok/{unit}-s':>11}  per pool"]
    for point in doc["points"]:
        load = (f"c={point['max_concurrency']}" if point["sweep"] == "concurrency"
                else f"{point['request_rate']:g}/s")
        pools = " ".join(f"{pool} {value:.0f}" for pool, value in point["tokens_per_gpu_s"].items())
        lines.append(f"{point['mode']:<7}{load:>7}{point['completed']:>5}{point['failed']:>5}"
                     f"{point['request_throughput']:>7.2f}{point['output_throughput']:>10.1f}"
                     f"{_ms(point['p50_ttft_ms']):>9}{_ms(point['p99_ttft_ms']):>7}"
                     f"{_ms(point['p50_itl_ms']):>8}{_ms(point['p99_itl_ms']):>7}"
                     f"{point['deployment_tokens_per_gpu_s']:>11.0f}  {pools}")
    failed = [p for p in doc["points"] if p["first_error"]]
    for point in failed[:3]:
        lines.append(f"first failure ({point['mode']}, {point['sweep']}): {point['first_error']}")
    return lines
