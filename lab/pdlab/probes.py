"""What `labctl up` shows once the lab serves: the first completion through
the router and Prometheus' view, both on the ports the control node publishes."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request

from .inventory import Lab
from .shell import step


def first_completion(lab: Lab, started: float, timeout: float = 120) -> None:
    """One chat completion through the router's published port."""
    body = json.dumps({"model": lab.model, "messages": [{"role": "user", "content": "Hello!"}],
                       "max_tokens": 8}).encode()
    base = f"http://127.0.0.1:{lab.router_port}/v1"
    request = urllib.request.Request(f"{base}/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            reply = json.loads(answer.read())
    except OSError as exc:
        raise SystemExit(f"the router did not answer at {base}: {exc}") from None
    step(f"first completion through the router {time.monotonic() - started:.0f} s after start: "
         f"{reply['choices'][0]['message']['content']!r}")


def prometheus_report(lab: Lab, timeout: float = 90) -> None:
    """After the first completion: every lab target up in Prometheus and the
    per-pool TPGS rule producing data (scrape and rules run every 5 s)."""
    base = f"http://127.0.0.1:{lab.prometheus_port}/api/v1"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{base}/targets?state=active", timeout=10) as answer:
                targets = json.loads(answer.read())["data"]["activeTargets"]
            query = urllib.parse.urlencode({"query": "pool:vllm_tokens_per_gpu:rate1m"})
            with urllib.request.urlopen(f"{base}/query?{query}", timeout=10) as answer:
                tpgs = {r["metric"]["pool"]: float(r["value"][1]) for r in json.loads(answer.read())["data"]["result"]}
        except OSError as exc:
            targets, tpgs = [], {}
            error = str(exc)
        else:
            error = ""
        up = [t for t in targets if t["health"] == "up"]
        if (targets and len(up) == len(targets) and all(tpgs.get(p, 0) > 0 for p in ("prefill", "decode"))) \
                or time.monotonic() > deadline:
            break
        time.sleep(2)
    figures = ", ".join(f"{pool} {value:.2f}" for pool, value in sorted(tpgs.items())) or "no data"
    step(f"Prometheus: {len(up)} of {len(targets)} targets up; TPGS (tokens/GPU/s) {figures}"
         + (f" ({error})" if error else ""))
