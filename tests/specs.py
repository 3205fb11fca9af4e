"""Test helpers: the spec shapes (shared with the benchmarks, hence in
lib/pd_bench) and a reader of systemd's ExecStart quoting."""

from __future__ import annotations

# Re-exported: tests import their spec shapes from here.
from pd_bench.specs import GB200_VARS, address, gb200_pools, make_spec

__all__ = ["GB200_VARS", "address", "gb200_pools", "make_spec", "systemd_split"]


def systemd_split(value: str) -> list[str]:
    """Split an ExecStart value the way systemd documents it (quotes,
    backslash escapes, %% and $$), to read back what exec_line wrote."""
    value = value.replace("\\\n", " ")
    words, current, quote, i, started = [], "", None, 0, False
    while i < len(value):
        ch = value[i]
        if quote:
            if ch == "\\":
                nxt = value[i + 1]
                current += {"n": "\n", "t": "\t"}.get(nxt, nxt)
                i += 2
                continue
            if ch == quote:
                quote = None
            else:
                current += ch
        elif ch in "\"'":
            quote, started = ch, True
        elif ch.isspace():
            if started or current:
                words.append(current)
            current, started = "", False
        else:
            current += ch
        i += 1
    if started or current:
        words.append(current)
    return [w.replace("%%", "%").replace("$$", "$") for w in words]
