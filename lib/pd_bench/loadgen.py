"""Chat requests against a live deployment: one-off (`post`, `chat_body`, used
by bench/serving_bench.py) and a steady loop counting what fails (`Load`,
used by bench/scale_load.py and the molecule scale scenario)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request


def post(url: str, body: dict, timeout: float = 120) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return json.loads(answer.read())


def chat_body(model: str, max_tokens: int, prompt: str, **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, **extra}


def remote_decode_request() -> dict:
    """kv_transfer_params of the prefill half of a request sent straight to the
    instances, as vllm-router's PD mode sends it with NixlConnector: the
    prefill instance keeps the KV for a decode instance to pull; its answer's
    kv_transfer_params then go with the decode half."""
    return {"do_remote_decode": True, "do_remote_prefill": False, "remote_engine_id": None,
            "remote_block_ids": None, "remote_host": None, "remote_port": None}


def refused(exc: Exception) -> bool:
    """The router never saw the request: nothing listened on its port."""
    return isinstance(getattr(exc, "reason", exc), ConnectionRefusedError)


class Load(threading.Thread):
    """Sequential chat requests until stopped.

    A connection the router refuses (nothing listening, as in the few
    seconds a router restart takes) never reached it, so it is retried every
    `retry_pause` s for up to `retry_for` s, as clients with retries do (the
    openai SDK retries connection errors by default); those attempts are
    counted in `refused`, and the longest run of them in `longest_gap`.
    Anything else (an error status, a reset, a timeout, an answer without generated tokens, or
    refusals beyond `retry_for`) is a failed request.
    """

    def __init__(self, router: str, model: str = "tiny-llama", pause: float = 0.5, timeout: float = 90,
                 retry_for: float = 20, retry_pause: float = 0.2):
        super().__init__(daemon=True)
        self.router, self.model, self.pause, self.timeout = router.rstrip("/"), model, pause, timeout
        self.retry_for, self.retry_pause = retry_for, retry_pause
        self.stop_event = threading.Event()
        self.ok, self.failed, self.latencies = 0, [], []
        self.refused, self.longest_gap = 0, 0.0

    def one(self, body: dict) -> None:
        first_refusal = None
        while True:
            try:
                answer = post(f"{self.router}/v1/chat/completions", body, self.timeout)
            except Exception as exc:
                now = time.monotonic()
                if refused(exc) and (first_refusal is None or now - first_refusal < self.retry_for):
                    first_refusal = first_refusal or now
                    self.refused += 1
                    # Refused from the first to this attempt, plus the pause.
                    self.longest_gap = max(self.longest_gap, now - first_refusal + self.retry_pause)
                    time.sleep(self.retry_pause)
                    continue
                raise
            # The lab's random-weight model may well answer only special
            # tokens (empty text); a served request still generated tokens.
            if not answer["usage"]["completion_tokens"] or not answer["choices"]:
                raise ValueError(f"no tokens generated: {answer}")
            return

    def run(self):
        body = chat_body(self.model, 8, "Count to three.")
        while not self.stop_event.is_set():
            started = time.perf_counter()
            try:
                self.one(body)
                self.ok += 1
                self.latencies.append(time.perf_counter() - started)
            except Exception as exc:
                self.failed.append(f"{time.strftime('%H:%M:%S')} {type(exc).__name__}: {exc}")
            time.sleep(self.pause)

    def finish(self) -> None:
        self.stop_event.set()
        self.join(self.timeout + self.retry_for + 10)

    def summary(self) -> str:
        latencies = sorted(self.latencies)
        p50 = f", p50 {latencies[len(latencies) // 2]:.2f} s, max {latencies[-1]:.1f} s" if latencies else ""
        return (f"{self.ok} served, {len(self.failed)} failed{p50}; {self.refused} connection attempts refused "
                f"and retried (longest gap {self.longest_gap:.1f} s)"
                + (f" (first failure: {self.failed[0]})" if self.failed else ""))
