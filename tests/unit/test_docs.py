"""Docs that are generated from code stay in step with it.

docs/variables.md is generated (planner options from lib/pd_planner's schema,
role variables from argument specs and defaults) and checked byte for byte;
the argument specs, which ansible-doc and the generator read, must state the
default each role's defaults/main.yml really sets.
"""

from __future__ import annotations

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
        documented = set(specs["main"].get("options", {}))
        assert set(defaults) == documented, f"{role.name}: defaults {sorted(defaults)} vs specs {sorted(documented)}"


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
