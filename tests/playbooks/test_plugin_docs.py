"""ansible-doc shows every project plugin with its own documentation.

A filter file that holds several filters documents each one in a sidecar
plugins/filter/<filter>.yml; without it ansible-doc shows the file's one
DOCUMENTATION for all of them (14 of 20 filters once did).
"""

from __future__ import annotations

import ast
import json
import subprocess

import pytest
from conftest import BIN, ENV, ROOT

pytestmark = pytest.mark.playbook

FILTER_DIR = ROOT / "plugins" / "filter"


def _filters_in_source() -> dict[str, str]:
    """Filter name -> the .py file defining it, read from each FilterModule.filters() dict."""
    found = {}
    for path in sorted(FILTER_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name == "filters":
                for ret in ast.walk(node):
                    if isinstance(ret, ast.Return) and isinstance(ret.value, ast.Dict):
                        for key in ret.value.keys:
                            assert isinstance(key, ast.Constant), f"{path.name}: a filter name is not a literal"
                            found[key.value] = path.name
    return found


def _ansible_doc(*args: str) -> dict:
    result = subprocess.run([str(BIN / "ansible-doc"), "--json", *args],
                            capture_output=True, text=True, env=ENV, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    # A filter file that fails to import is skipped with only a warning.
    assert "Skipping" not in result.stderr, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def filter_docs() -> tuple[dict[str, str], dict]:
    filters = _filters_in_source()
    assert filters, "no filters found under plugins/filter"
    return filters, _ansible_doc("-t", "filter", *sorted(filters))


def test_every_filter_has_its_own_entry(filter_docs):
    filters, docs = filter_docs
    problems = []
    for name, source in sorted(filters.items()):
        doc = (docs.get(name) or {}).get("doc") or {}
        where = doc.get("filename", "")
        if doc.get("name") != name:
            problems.append(f"{name}: ansible-doc shows the entry of {doc.get('name')!r} ({where})")
            continue
        expected = {f"{name}.yml", source} if source == f"{name}.py" else {f"{name}.yml"}
        if where.rsplit("/", 1)[-1] not in expected:
            problems.append(f"{name}: documented in {where}, expected {' or '.join(sorted(expected))}")
        if not doc.get("short_description") or not doc.get("description"):
            problems.append(f"{name}: no short_description or description")
        if "_input" not in (doc.get("options") or {}):
            problems.append(f"{name}: options do not document _input")
        if not docs[name].get("examples") or not (docs[name].get("return") or {}).get("_value"):
            problems.append(f"{name}: no EXAMPLES or no RETURN _value")
    assert not problems, "\n".join(problems)


def test_no_two_filters_share_a_description(filter_docs):
    _filters, docs = filter_docs
    by_text: dict[str, list[str]] = {}
    for name, entry in docs.items():
        by_text.setdefault(entry["doc"]["short_description"], []).append(name)
    shared = {text: names for text, names in by_text.items() if len(names) > 1}
    assert not shared, f"filters share a short_description: {shared}"


def test_every_sidecar_documents_an_existing_filter(filter_docs):
    filters, _docs = filter_docs
    orphans = sorted(p.name for p in FILTER_DIR.glob("*.yml") if p.stem not in filters)
    assert not orphans, f"docs of filters that no longer exist: {orphans}"


def test_multi_filter_files_leave_docs_to_sidecars(filter_docs):
    # ansible-doc prefers a file's DOCUMENTATION over the sidecars, so a shared
    # file with one would show it for every filter it holds.
    filters, _docs = filter_docs
    for source in sorted(set(filters.values())):
        names = [n for n, s in filters.items() if s == source]
        if len(names) > 1:
            assigned = {target.id for node in ast.parse((FILTER_DIR / source).read_text()).body
                        if isinstance(node, ast.Assign) for target in node.targets
                        if isinstance(target, ast.Name)}
            assert "DOCUMENTATION" not in assigned, (source, names)


@pytest.mark.parametrize("action", ["pd_wait_healthy", "pd_files"])
def test_action_module_doc_loads(action):
    docs = _ansible_doc("-t", "module", action)
    doc = docs[action]["doc"]
    assert doc["filename"].endswith(f"plugins/modules/{action}.py")
    # The documented options are the ones the action plugin accepts.
    source = (ROOT / "plugins" / "action" / f"{action}.py").read_text()
    valid = next(node for node in ast.walk(ast.parse(source))
                 if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_VALID_ARGS")
    accepted = set(ast.literal_eval(valid.value.args[0]))
    assert set(doc["options"]) == accepted
