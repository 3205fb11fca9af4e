"""A steady request loop through the router, counting what fails (used by
bench/scale_load.py and the molecule scale scenario)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request


class Load(threading.Thread):
    """Sequential chat requests until stopped; every failure is recorded."""

    def __init__(self, router: str, model: str = "tiny-llama", pause: float = 0.2, timeout: float = 90):
        super().__init__(daemon=True)
        self.router, self.model, self.pause, self.timeout = router.rstrip("/"), model, pause, timeout
        self.stop_event = threading.Event()
        self.ok, self.failed, self.latencies = 0, [], []

    def run(self):
        body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": "Count to three."}],
                           "max_tokens": 8}).encode()
        while not self.stop_event.is_set():
            request = urllib.request.Request(f"{self.router}/v1/chat/completions", data=body,
                                             headers={"Content-Type": "application/json"})
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                    if not json.loads(answer.read())["choices"][0]["message"]["content"]:
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
