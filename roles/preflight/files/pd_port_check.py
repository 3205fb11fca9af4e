#!/usr/bin/env python3
"""Report planned ports that something other than their planned unit listens on.

    pd_port_check.py '[{"port": 8100, "unit": "vllm-prefill-0"}, ...]'

Reads `ss -Hltnup` and each listener's systemd unit from /proc/PID/cgroup. A
port held by its own planned unit (a rerun) is fine. Prints a JSON list of
conflicts: {port, unit, process, holder, message}; exit 0 either way, 2 if ss fails.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

_USER = re.compile(r'\("([^"]+)",pid=(\d+)')


def _unit_of(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as handle:
            for line in handle:
                for part in reversed(line.strip().split(":")[-1].split("/")):
                    if part.endswith(".service"):
                        return part[: -len(".service")]
    except OSError:
        pass
    return ""


def _active(unit: str) -> bool:
    # A worker still in its start gate (loading, health, warm-up) is
    # `activating` and already holds its NIXL ports.
    result = subprocess.run(["systemctl", "is-active", f"{unit}.service"], capture_output=True, text=True, check=False)
    return result.stdout.strip() in ("active", "activating", "reloading")


def listeners() -> dict[int, list[tuple[str, str]]]:
    out = subprocess.run(["ss", "-Hltnup"], capture_output=True, text=True, check=True).stdout
    found: dict[int, list[tuple[str, str]]] = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        local = fields[4]
        try:
            port = int(local.rsplit(":", 1)[1])
        except (IndexError, ValueError):
            continue
        for process, pid in _USER.findall(line):
            found.setdefault(port, []).append((process, _unit_of(pid)))
        found.setdefault(port, [])
    return found


def main(argv: list[str]) -> int:
    planned = json.loads(argv[0]) if argv else []
    try:
        current = listeners()
    except (OSError, subprocess.CalledProcessError) as exc:
        print(json.dumps({"error": str(exc)}))
        return 2
    conflicts = []
    for entry in planned:
        for process, unit in current.get(entry["port"], []) or ([("unknown", "")] if entry["port"] in current else []):
            if process == "unknown" and _active(entry["unit"]):
                # ss could not name the holder (no CAP_SYS_PTRACE, e.g. in a
                # container, hides other users' sockets) while the planned
                # unit runs: a rerun, taken as the unit's own port.
                continue
            if unit != entry["unit"]:
                holder = unit or "no systemd unit"
                conflicts.append({"port": entry["port"], "unit": entry["unit"], "process": process, "holder": holder,
                                  "message": f"port {entry['port']} (planned for {entry['unit']}) is taken by "
                                             f"{process} ({holder})"})
    print(json.dumps(conflicts))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
