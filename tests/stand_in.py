"""A minimal HTTP worker for tests of the router, the front door and the
start gate: what they do with a worker is under test, not serving."""

from __future__ import annotations

import http.server
import time


class StandInWorker(http.server.BaseHTTPRequestHandler):
    """A worker for the router to register and forward to: 200 on the GET
    paths, `body` after `delay` on POST, 401 where `allowed()` says no
    (test_api_key.py makes it check vLLM's key)."""

    get_paths: tuple[str, ...] = ("/health",)
    delay = 0.005
    body = b'{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"ok"}}]}'

    def allowed(self) -> bool:
        return True

    def do_GET(self):
        self.send_response(200 if self.path in self.get_paths else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        time.sleep(self.delay)
        body = self.body if self.allowed() else b'{"error":"Unauthorized"}'
        self.send_response(200 if self.allowed() else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass
