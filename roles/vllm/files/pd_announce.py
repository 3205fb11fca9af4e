#!/usr/bin/env python3
"""Announce one vLLM instance to vllm-router's ZMQ discovery while it is healthy.

    pd_announce.py --type P --health http://10.0.0.1:8100/health \
        --router tcp://10.0.0.9:30001 --address http://10.0.0.1:8100@0 --address http://10.0.0.1:8100@1

vllm-router (`--vllm-discovery-address`) binds a ZMQ ROUTER socket and keeps
an instance while messages keep coming: each refreshes it for 5 s (whole
seconds), then it is dropped. This sends, every --interval seconds and only
while --health answers 200 (and --ready-file exists: the start gate's mark
that the instance is warmed up), one msgpack map {"type", "http_address",
"zmq_address"} per --address to every --router. When /health fails or the
process stops (the unit stops first on scale-in), the announcements stop and
the router drops the instance about 5 s later; no router restart either way.

A DEALER socket per router, connected (the router never answers); with
ZMQ_IMMEDIATE nothing queues for a router that is not connected, so a router
that comes back hears the current state, not old announcements.

--state FILE gets a JSON record on every change: announcing or not, why, and
which routers are connected. Runs on the vLLM venv's Python (pyzmq is a vLLM
dependency); msgpack is written by hand for these few short strings.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request

import zmq
import zmq.utils.monitor

# vllm-router's ServiceRegistration: type "P" or "D", http_address (a
# `url@rank` pins one data-parallel rank), zmq_address (only used in the
# request id of a NIXL pair).
TYPES = ("P", "D")


def _msgpack_str(text: str) -> bytes:
    raw = text.encode()
    if len(raw) < 32:
        return bytes([0xA0 | len(raw)]) + raw
    if len(raw) < 256:
        return bytes([0xD9, len(raw)]) + raw
    return bytes([0xDA]) + len(raw).to_bytes(2, "big") + raw


def pack(entry: dict[str, str]) -> bytes:
    """A msgpack map of at most 15 string keys and values."""
    if len(entry) > 15:
        raise ValueError("at most 15 entries")
    return bytes([0x80 | len(entry)]) + b"".join(_msgpack_str(k) + _msgpack_str(v) for k, v in entry.items())


def registration(kind: str, address: str) -> bytes:
    base = address.split("://", 1)[-1].split("@", 1)[0]
    return pack({"type": kind, "http_address": address, "zmq_address": base})


def healthy(url: str, timeout: float) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status == 200, f"HTTP {answer.status}"
    except urllib.error.HTTPError as error:
        return False, f"HTTP {error.code}"
    except (OSError, ValueError) as error:
        return False, str(getattr(error, "reason", error))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--type", required=True, choices=TYPES, help="P (prefill) or D (decode)")
    parser.add_argument("--health", required=True, help="the instance's health URL")
    parser.add_argument("--router", action="append", required=True, help="tcp://host:port, once per router")
    parser.add_argument("--address", action="append", required=True,
                        help="worker URL as the router should route to it (url@rank per data-parallel rank)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between announcements")
    parser.add_argument("--ready-file", help="announce only while this file exists (the start gate writes it "
                        "once the instance is warmed up, and removes it when the instance starts again)")
    parser.add_argument("--state", help="JSON file that records what is announced")
    args = parser.parse_args(argv)
    if not 0.1 <= args.interval <= 2:
        parser.error("--interval must be 0.1 to 2 s (the router drops an instance 5 s after its last message)")
    return args


class Announcer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.context = zmq.Context()
        self.sockets: dict[str, zmq.Socket] = {}
        self.monitors: dict[str, zmq.Socket] = {}
        self.connected: dict[str, bool] = {}
        for target in args.router:
            sock = self.context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IMMEDIATE, 1)
            sock.setsockopt(zmq.SNDHWM, 16)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
            self.monitors[target] = sock.get_monitor_socket(
                zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED)
            sock.connect(target)
            self.sockets[target] = sock
            self.connected[target] = False
        self.messages = [registration(args.type, a) for a in args.address]
        self.record: dict = {}

    def _watch_connections(self) -> None:
        for target, monitor in self.monitors.items():
            while monitor.poll(0):
                event = zmq.utils.monitor.recv_monitor_message(monitor)["event"]
                self.connected[target] = event == zmq.EVENT_HANDSHAKE_SUCCEEDED

    def _note(self, announcing: bool, why: str) -> None:
        record = {"announcing": announcing, "why": why, "type": self.args.type,
                  "addresses": self.args.address, "routers": dict(self.connected)}
        if record == {k: self.record.get(k) for k in record}:
            return
        if announcing != self.record.get("announcing") or why != self.record.get("why"):
            state = "announcing" if announcing else "not announcing"
            print(f"{state} {', '.join(self.args.address)} to {', '.join(self.args.router)}: {why}", flush=True)
        self.record = {**record, "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if self.args.state:
            temporary = f"{self.args.state}.tmp"
            with open(temporary, "w", encoding="utf-8") as out:
                json.dump(self.record, out, sort_keys=True)
                out.write("\n")
            os.replace(temporary, self.args.state)

    def step(self) -> None:
        self._watch_connections()
        if self.args.ready_file and not os.path.exists(self.args.ready_file):
            ok, why = False, f"waiting for the start gate ({self.args.ready_file} missing: starting or warming up)"
        else:
            ok, why = healthy(self.args.health, timeout=min(2.0, 2 * self.args.interval))
            why = f"{self.args.health} {why}"
        if ok:
            for sock in self.sockets.values():
                for message in self.messages:
                    try:
                        sock.send(message, zmq.NOBLOCK)
                    except zmq.Again:  # not connected (IMMEDIATE): nothing queues
                        break
        self._note(ok, why)

    def close(self) -> None:
        for sock in [*self.monitors.values(), *self.sockets.values()]:
            sock.close(linger=0)
        self.context.term()


def _stop(*_: object) -> None:
    """SIGTERM (systemctl stop) ends the loop at once, mid-sleep included."""
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    announcer = Announcer(args)
    try:
        while True:
            started = time.monotonic()
            announcer.step()
            time.sleep(max(0.0, args.interval - (time.monotonic() - started)))
    except KeyboardInterrupt:
        pass
    finally:
        announcer.close()
    print("stopped: the router drops these workers about 5 s after the last announcement", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
