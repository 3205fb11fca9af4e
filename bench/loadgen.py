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


class Load(threading.Thread):
    """Sequential chat requests until stopped; every failure is recorded."""

    def __init__(self, router: str, model: str = "tiny-llama", pause: float = 0.2, timeout: float = 90):
        super().__init__(daemon=True)
        self.router, self.model, self.pause, self.timeout = router.rstrip("/"), model, pause, timeout
        self.stop_event = threading.Event()
        self.ok, self.failed, self.latencies = 0, [], []

    def run(self):
        body = chat_body(self.model, 8, "Count to three.")
        while not self.stop_event.is_set():
            started = time.perf_counter()
            try:
                answer = post(f"{self.router}/v1/chat/completions", body, self.timeout)
                if not answer["choices"][0]["message"]["content"]:
                    raise ValueError("empty completion")
                self.ok += 1
                self.latencies.append(time.perf_counter() - started)
            except Exception as exc:
                self.failed.append(f"{time.strftime('%H:%M:%S')} {type(exc).__name__}: {exc}")
            time.sleep(self.pause)

    def finish(self) -> None:
        self.stop_event.set()
        self.join(self.timeout + 10)

    def summary(self) -> str:
        return f"{self.ok} served, {len(self.failed)} failed" + (f" (first: {self.failed[0]})" if self.failed else "")
