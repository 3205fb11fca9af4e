"""Numeric comparison of vLLM release strings ("0.33.0", "0.32.0+cpu")."""

from __future__ import annotations

import re

from .errors import PlanError

_RELEASE = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?(?:\+[0-9A-Za-z.]+)?$")


def parse_version(text: object, variable: str = "pd_vllm_version") -> tuple[int, int, int]:
    """Return (major, minor, patch); a local suffix such as +cpu is ignored."""
    match = _RELEASE.match(str(text).strip())
    if not match:
        raise PlanError(
            f"{variable} is {text!r}; expected a vLLM release such as '0.33.0' "
            "(pre-releases and ranges are not planned against)"
        )
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def version_in_range(version: tuple[int, int, int], minimum: str | None, until: str | None) -> bool:
    """True when minimum <= version < until (either bound may be None)."""
    if minimum is not None and version < parse_version(minimum):
        return False
    return not (until is not None and version >= parse_version(until))
