"""Plain Python values from whatever mapping/sequence types a caller passes
(Ansible's tagged strings and lazy containers): stable equality and JSON."""

from __future__ import annotations

from collections.abc import Mapping


def plain(value):
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)
