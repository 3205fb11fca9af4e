"""Docs that are generated from code stay in step with it.

docs/variables.md is generated (planner options from lib/pd_planner's schema,
role variables from argument specs and defaults) and checked byte for byte;
the argument specs, which ansible-doc and the generator read, must state the
default each role's defaults/main.yml really sets.
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT


def test_variables_doc_is_current():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_variables_doc.py"), "--check"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_every_role_has_argument_specs_and_defaults():
    for role in sorted((ROOT / "roles").iterdir()):
        assert (role / "meta" / "argument_specs.yml").is_file(), role.name
        assert (role / "defaults" / "main.yml").is_file(), role.name


def test_argument_specs_document_every_default():
    import yaml

    for role in sorted((ROOT / "roles").iterdir()):
        defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
        specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
        options = specs["main"].get("options", {})
        # A required option is the caller's to give: it has no default.
        optional = {name for name, option in options.items() if not option.get("required")}
        assert set(defaults) == optional, (f"{role.name}: defaults {sorted(defaults)} vs optional options in "
                                           f"argument_specs {sorted(optional)}")


def test_argument_spec_defaults_equal_role_defaults():
    import yaml

    drift = []
    for role in sorted((ROOT / "roles").iterdir()):
        defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
        specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
        for entry, spec in specs.items():
            for name, option in (spec.get("options") or {}).items():
                if name in defaults and option.get("default", "<no default>") != defaults[name]:
                    drift.append(f"{role.name} ({entry}) {name}: argument_specs default "
                                 f"{option.get('default', '<no default>')!r}, defaults/main.yml {defaults[name]!r}")
    assert not drift, "\n".join(drift)


def test_documented_planner_defaults_are_the_ones_the_plan_applies():
    # docs/variables.md prints the option tables' defaults; a plan from an
    # inventory that sets none of these options must carry exactly those.
    from pd_planner import build_plan, schema
    from specs import make_spec

    plan = build_plan(make_spec(router={}, monitoring={}))
    tables = {"pd_router": (schema.ROUTER_OPTIONS, plan["router"]["settings"]),
              "pd_monitoring": (schema.MONITORING_OPTIONS, plan["scrape"]["monitoring"])}
    drift = [f"{variable}.{key}: documented {default!r}, planned {applied.get(key, '<missing>')!r}"
             for variable, (options, applied) in tables.items()
             for key, (_types, default, _meaning) in options.items()
             if applied.get(key, "<missing>") != default]
    assert not drift, "\n".join(drift)


def _plan_paths(value, path: str = "") -> set[str]:
    """Key paths of a plan: `a.b` for mapping keys, `a[]` for list items; a
    list of scalars is its own leaf (`serve_args`, not `serve_args[]`)."""
    if isinstance(value, dict) and value:
        paths = {path} if path else set()
        for key, item in value.items():
            paths |= _plan_paths(item, f"{path}.{key}" if path else key)
        return paths
    if isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value):
        paths = {path}
        for item in value:
            paths |= _plan_paths(item, f"{path}[]")
        return paths
    return {path}


def _documented_plan_paths() -> set[str]:
    import re

    paths = set()
    for line in (ROOT / "docs" / "plan.md").read_text().splitlines():
        if line.startswith("| `"):
            paths |= set(re.findall(r"`([^`]+)`", line.split(" | ")[0]))
    return paths


def _covers(documented: str, actual: str) -> bool:
    """`<name>` matches any one key; at the end it covers everything below
    (so `actual` may be longer than `documented`, hence strict=False)."""
    want, have = documented.split("."), actual.split(".")
    if len(want) > len(have) or (len(want) < len(have) and not want[-1].startswith("<")):
        return False
    return all(w == h or (w.startswith("<") and w.endswith(">")) for w, h in zip(want, have, strict=False))


def test_plan_doc_lists_exactly_the_golden_plan_keys():
    plan = json.loads((ROOT / "tests" / "golden" / "gb200-plan.json").read_text())
    actual = _plan_paths(plan)
    documented = _documented_plan_paths()
    # Containers need no row of their own when their keys have rows.
    leaves = {p for p in actual if not any(q.startswith(p + ".") or q.startswith(p + "[]") for q in actual)}
    undocumented = sorted(p for p in leaves if not any(_covers(d, p) for d in documented))
    stale = sorted(d for d in documented if not any(_covers(d, p) for p in actual))
    assert not (undocumented or stale), (f"docs/plan.md lacks these plan keys: {undocumented}; "
                                         f"it lists keys the golden plan does not have: {stale}")
