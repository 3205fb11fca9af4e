"""Every conditional in the project's YAML is a string (or a bool): a `: ` inside an unquoted
expression makes YAML read it as a mapping, which Ansible refuses only when the task runs
("Conditional expressions must be strings") - for a molecule prepare step, deep into make test."""

from __future__ import annotations

from pathlib import Path

import yaml
from conftest import ROOT

CONDITION_KEYS = ("when", "failed_when", "changed_when", "until")


def _conditions(node):
    """(key, condition) for every conditional under a parsed YAML node."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in CONDITION_KEYS:
                yield from ((key, c) for c in (value if isinstance(value, list) else [value]))
            elif key == "that" and isinstance(value, list | str):
                yield from (("that", c) for c in (value if isinstance(value, list) else [value]))
            else:
                yield from _conditions(value)
    elif isinstance(node, list):
        for item in node:
            yield from _conditions(item)


def test_every_conditional_is_a_string():
    broken = []
    for folder in ("roles", "playbooks", "molecule"):
        for path in sorted((ROOT / folder).rglob("*.yml")):
            for key, condition in _conditions(yaml.safe_load(path.read_text())):
                if not isinstance(condition, str | bool):
                    broken.append(f"{Path(path).relative_to(ROOT)}: {key}: {condition!r}")
    assert not broken, "quote these conditionals:\n" + "\n".join(broken)
