"""What a running vllm-router has versus what the plan wants.

The desired worker set is the plan's router.workers. These helpers tell a
settings change from a worker-set change in the installed unit text, and
read the router's own /workers answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_WORKER = re.compile(r"^\s*--(prefill|decode)\s+(\S+)", re.MULTILINE)
# Derived from the worker set (decode batch slots): a live removal keeps the
# running router's limits, the unit carries the new ones to its next start.
_FOLLOWS_WORKERS = re.compile(r"^\s*--(max-concurrent-requests|queue-size)\s")


def unit_settings(unit_text: str) -> str:
    """The unit without its comments, worker lines and the limits derived
    from the worker set: equal settings mean only the worker set differs."""
    kept = [line for line in (unit_text or "").splitlines()
            if not line.startswith("#") and not _WORKER.match(line) and not _FOLLOWS_WORKERS.match(line)]
    return "\n".join(kept)


def listed_workers(answer: Mapping) -> dict[str, list[str]]:
    """{"prefill": [urls], "decode": [urls]} from GET /workers, which answers
    {"workers": [{"url", "worker_type"}, ...]} (/list_workers has no types)."""
    found: dict[str, list[str]] = {"prefill": [], "decode": []}
    for entry in answer.get("workers") or []:
        kind = str(entry.get("worker_type") or "").lower()
        if kind in found:
            found[kind].append(str(entry["url"]))
    return {kind: sorted(urls) for kind, urls in found.items()}
