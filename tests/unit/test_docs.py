"""Docs that are generated from code stay in step with it."""

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
