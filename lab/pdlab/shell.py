"""Paths and the few process wrappers every lab module uses."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / ".lab"
# Marks every lab node, so status/destroy find them without a name list.
LABEL = "io.vllm-pd-ansible.lab=1"
ENV = {**os.environ, "CONTAINERS_CONF": str(ROOT / "lab" / "containers.conf")}


def step(message: str) -> None:
    print(f"[lab {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(*cmd: str, check: bool = True, capture: bool = False, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, text=True, capture_output=capture, env=ENV, **kw)


def podman(*args: str, check: bool = True, capture: bool = True) -> subprocess.CompletedProcess:
    return run("podman", *args, check=check, capture=capture)
