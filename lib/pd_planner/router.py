"""What a running vllm-router has versus what the plan wants.

A changed worker set can reach a running router through its API instead of
a restart. These helpers tell the two kinds of change apart from the
rendered unit text, and read the router's own /workers answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_WORKER = re.compile(r"^\s*--(prefill|decode)\s+(\S+)", re.MULTILINE)


def unit_workers(unit_text: str) -> dict[str, list[str]]:
    """{"prefill": [urls], "decode": [urls]} from a rendered router unit."""
    found: dict[str, list[str]] = {"prefill": [], "decode": []}
    for kind, url in _WORKER.findall(unit_text or ""):
        found[kind].append(url.strip('"'))
    return {kind: sorted(urls) for kind, urls in found.items()}


def unit_settings(unit_text: str) -> str:
    """The unit without its comments and worker lines: equal settings mean
    only the worker set differs."""
    kept = [line for line in (unit_text or "").splitlines()
            if not line.startswith("#") and not _WORKER.match(line)]
    return "\n".join(kept)


def listed_workers(answer) -> dict[str, list[str]]:
    """{"prefill": [urls], "decode": [urls]} from GET /workers
    ({"workers": [{"url", "worker_type"}, ...]}; /list_workers has no types)."""
    found: dict[str, list[str]] = {"prefill": [], "decode": []}
    workers = answer.get("workers", answer) if isinstance(answer, Mapping) else answer
    if isinstance(workers, Mapping):
        # {"prefill": [...], "decode": [...]} or {"prefill_urls": ...}
        for kind in ("prefill", "decode"):
            for entry in workers.get(kind) or workers.get(f"{kind}_urls") or []:
                found[kind].append(entry["url"] if isinstance(entry, Mapping) else str(entry))
        return {kind: sorted(urls) for kind, urls in found.items()}
    for entry in workers or []:
        if not isinstance(entry, Mapping):
            continue
        kind = str(entry.get("worker_type") or entry.get("type") or "").lower()
        for wanted in ("prefill", "decode"):
            if wanted in kind:
                found[wanted].append(str(entry["url"]))
    return {kind: sorted(urls) for kind, urls in found.items()}
