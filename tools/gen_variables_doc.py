#!/usr/bin/env python3
"""Write docs/variables.md from the planner's option tables and the roles' argument specs.

The planner's options come from lib/pd_planner/schema.py; every role variable
from roles/<role>/meta/argument_specs.yml (meaning, type) and
roles/<role>/defaults/main.yml (default: the value Ansible uses).

    python tools/gen_variables_doc.py          # rewrite the file
    python tools/gen_variables_doc.py --check  # exit 1 when it is stale
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml
from pd_planner import catalog, rayserve, schema
from pd_planner.inventory import CLUSTER_VARIABLES, HOST_VARIABLES, REQUIRED

ROOT = Path(__file__).resolve().parents[1]

TARGET = ROOT / "docs" / "variables.md"
CLUSTER_MEANING = {
    "pd_vllm_version": "vLLM release every node runs; connectors and kv-transfer fields are checked against it",
    "pd_kv_connector": "KV connector between the pools",
    "pd_model": "the checkpoint (see pd_model below)",
    "pd_cluster_cidr": "network every worker, router and Prometheus binds an address in",
    "pd_router": "vllm-router settings (see below)",
    "pd_monitoring": "Prometheus / Grafana ports (see below)",
    "pd_worker_env": "extra environment for every worker",
    "pd_ucx_tls": "UCX_TLS for NIXL; unset lets UCX choose",
    "pd_kv_shared_storage_path": "directory both pools share (ExampleConnector only)",
    "pd_vllm_install_root": "directory holding one vLLM venv per version (default /opt/vllm; absolute)",
    "pd_imex_domains": "every tray's address per IMEX/NVLink domain (the rack), serving or not: the nodes_config.cfg "
                       "lists, so adding a tray to a pool changes no IMEX file",
    "pd_workload": "expected {isl, osl} tokens per request; the plan warns when the prefill:decode GPU ratio "
                   "is far from what the published per-GPU rates imply (make size)",
    "pd_serving": "serving mode: units (default) or rayserve, and the Ray cluster's settings (see below)",
}


def _default(value) -> str:
    if value is None:
        return "-"
    return f"`{value}`"


def _cell(text: str) -> str:
    # A Jinja filter's | would end the table cell.
    return " ".join(str(text).split()).replace("|", "\\|")


def _role_default(value) -> str:
    if value is None or value == "":
        return "-" if value is None else '`""`'
    if not isinstance(value, str):
        # As YAML writes it (true, not Python's True); collections on one line.
        value = yaml.safe_dump(value, default_flow_style=True, width=10_000).removesuffix("\n...\n").strip()
    return f"`{_cell(value)}`"


def _spec_type(option: dict) -> str:
    kind = option.get("type", "str")
    return f"{kind} of {option['elements']}" if "elements" in option else kind


def role_sections() -> list[str]:
    """Every role's variables: meaning and type from its argument specs, default from defaults/main.yml."""
    lines = ["", "## Role variables", "",
             "From each role's `meta/argument_specs.yml` (meaning, type) and `defaults/main.yml` (default);",
             "`ansible-doc -t role -r roles ROLE` shows the same. Defaults that are expressions are shown as written.",
             ""]
    for role in sorted(p for p in (ROOT / "roles").iterdir() if (p / "meta" / "argument_specs.yml").is_file()):
        specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
        defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
        options = specs["main"].get("options") or {}
        lines += [f"### {role.name}", "", _cell(specs["main"].get("short_description", "")), ""]
        if not options:
            lines += ["No variables.", ""]
            continue
        lines += ["| variable | type | default | meaning |", "| --- | --- | --- | --- |"]
        for name, option in options.items():
            default = defaults.get(name, option.get("default"))
            required = " (required)" if option.get("required") else ""
            lines.append(f"| `{name}` | {_spec_type(option)} | {_role_default(default)} | "
                         f"{_cell(option.get('description', ''))}{required} |")
        lines.append("")
    return lines[:-1]


def _table(options: dict, prefix: str = "") -> list[str]:
    rows = ["| option | type | default | meaning |", "| --- | --- | --- | --- |"]
    for key, (types, default, meaning) in options.items():
        rows.append(f"| `{prefix}{key}` | {schema._type_names(types)} | {_default(default)} | {meaning} |")
    return rows


def render() -> str:
    lines = [
        "# Inventory variables",
        "",
        "Generated from `lib/pd_planner/schema.py` and the roles' `meta/argument_specs.yml` and",
        "`defaults/main.yml` by `tools/gen_variables_doc.py`; do not edit by hand.",
        "Unknown options and wrong types fail the plan with a message naming the variable.",
        "",
        "## Cluster-wide (group_vars/all)",
        "",
        "Every host must see one value; a per-host override is an error.",
        "",
        "| variable | required | meaning |",
        "| --- | --- | --- |",
    ]
    undescribed = sorted(set(CLUSTER_VARIABLES) - set(CLUSTER_MEANING))
    if undescribed:
        raise SystemExit(f"tools/gen_variables_doc.py: add the meaning of {', '.join(undescribed)} to CLUSTER_MEANING")
    lines += [f"| `{var}` | {'yes' if var in REQUIRED else 'no'} | {CLUSTER_MEANING[var]} |"
              for var in CLUSTER_VARIABLES]
    lines += ["", f"`pd_kv_connector`: one of {', '.join(f'`{c}`' for c in catalog.CONNECTORS)}.", ""]
    lines += ["### pd_model", "", *_table(schema.MODEL_OPTIONS)]
    lines += ["", f"Capacity profiles: {', '.join(f'`{p}`' for p in catalog.MODEL_PROFILES)}.", ""]
    lines += ["### pd_router", "", *_table(schema.ROUTER_OPTIONS)]
    lines += ["", f"Policies: {', '.join(f'`{p}`' for p in catalog.ROUTER_POLICIES)}.", ""]
    lines += ["### pd_monitoring", "", *_table(schema.MONITORING_OPTIONS)]
    lines += ["", "### pd_serving", "", *_table(rayserve.SERVING_OPTIONS), "",
              f"Ray releases: {', '.join(f'`{r}`' for r in rayserve.RAY_RELEASES)}; see docs/rayserve.md."]
    lines += ["", "## Pool shape: `pd_pool` in group_vars/prefill.yml and group_vars/decode.yml", ""]
    lines += _table(schema.POOL_OPTIONS)
    lines += ["", "### pd_pool.offload", "", *_table(schema.OFFLOAD_OPTIONS)]
    lines += ["", "## Per host (host_vars or the inventory)", "", "| variable | meaning |", "| --- | --- |"]
    for var, key in HOST_VARIABLES.items():
        if var == "fact_addresses":
            continue
        lines.append(f"| `{var}` | {schema.HOST_OPTIONS[key][2]} |")
    lines += ["", "GPU profiles (`pd_gpu_profile`):", "", "| profile | GPUs | GB per GPU | arch | IMEX |",
              "| --- | --- | --- | --- | --- |"]
    for name, p in catalog.GPU_PROFILES.items():
        lines.append(f"| `{name}` | {p['gpus']} | {p['gpu_memory_gb'] or '-'} | {p['architecture']} | "
                     f"{'yes' if p['imex'] else 'no'} |")
    lines += role_sections()
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET} is stale: run python tools/gen_variables_doc.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
