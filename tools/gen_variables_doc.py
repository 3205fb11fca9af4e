#!/usr/bin/env python3
"""Write docs/variables.md from the planner's option tables (the one source).

    python tools/gen_variables_doc.py          # rewrite the file
    python tools/gen_variables_doc.py --check  # exit 1 when it is stale
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from pd_planner import catalog, schema  # noqa: E402
from pd_planner.inventory import CLUSTER_VARIABLES, HOST_VARIABLES, REQUIRED  # noqa: E402

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
}


def _default(value) -> str:
    if value is None:
        return "-"
    if value in ({}, []):
        return f"`{value}`"
    return f"`{value}`"


def _table(options: dict, prefix: str = "") -> list[str]:
    rows = ["| option | type | default | meaning |", "| --- | --- | --- | --- |"]
    for key, (types, default, meaning) in options.items():
        rows.append(f"| `{prefix}{key}` | {schema._type_names(types)} | {_default(default)} | {meaning} |")
    return rows


def render() -> str:
    lines = [
        "# Inventory variables",
        "",
        "Generated from `lib/pd_planner/schema.py` by `tools/gen_variables_doc.py`; do not edit by hand.",
        "Unknown options and wrong types fail the plan with a message naming the variable.",
        "",
        "## Cluster-wide (group_vars/all)",
        "",
        "Every host must see one value; a per-host override is an error.",
        "",
        "| variable | required | meaning |",
        "| --- | --- | --- |",
    ]
    lines += [f"| `{var}` | {'yes' if var in REQUIRED else 'no'} | {CLUSTER_MEANING[var]} |"
              for var in CLUSTER_VARIABLES]
    lines += ["", f"`pd_kv_connector`: one of {', '.join(f'`{c}`' for c in catalog.CONNECTORS)}.", ""]
    lines += ["### pd_model", "", *_table(schema.MODEL_OPTIONS)]
    lines += ["", f"Capacity profiles: {', '.join(f'`{p}`' for p in catalog.MODEL_PROFILES)}.", ""]
    lines += ["### pd_router", "", *_table(schema.ROUTER_OPTIONS)]
    lines += ["", f"Policies: {', '.join(f'`{p}`' for p in catalog.ROUTER_POLICIES)}.", ""]
    lines += ["### pd_monitoring", "", *_table(schema.MONITORING_OPTIONS)]
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
