"""A plain-text view of a plan, printed by render.yml (like `terraform plan`)."""

from __future__ import annotations


def _ranges(values: list[int]) -> str:
    if not values:
        return "-"
    if values == list(range(values[0], values[-1] + 1)) and len(values) > 2:
        return f"{values[0]}-{values[-1]}"
    return ",".join(str(v) for v in values)


def _grid(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]


def plan_table(plan: dict) -> str:
    """Render instances, router and scrape jobs as aligned text."""
    lines = [
        f"vLLM {plan['vllm_version']} | connector {plan['connector']} | model {plan['model']['served_name']} "
        f"({plan['model']['path']}) | cluster {plan['cluster_cidr']} | kv_parallel_size {plan['kv_parallel_size']}",
        "",
    ]
    rows = [["INSTANCE", "ROLE", "KV_RANK", "HOST", "NODE", "DEVICES", "TPxPPxDP(local)", "EP", "URL / PORTS"]]
    for inst in plan["instances"]:
        par = inst["parallelism"]
        for node in inst["nodes"]:
            ports = node["ports"]
            side = ports["nixl_side_channel"]
            if node["leader"]:
                where = inst["url"]
                if par["data_parallel_size"] > 1:
                    where += f" rpc {ports['dp_rpc']}"
            else:
                where = f"headless, dp start rank {node['data_parallel_start_rank']}"
            if plan["connector"] == "NixlConnector":
                where += f" nixl {side[0]}-{side[1]}" if side[0] != side[1] else f" nixl {side[0]}"
            rows.append([
                inst["name"] if node["leader"] else "",
                inst["role"] if node["leader"] else "",
                f"{inst['kv_rank']}/{inst['kv_parallel_size']}" if node["leader"] else "",
                node["host"],
                "leader" if node["leader"] else "follower",
                f"{node['device']}:{_ranges(node['gpus'])}",
                f"{par['tensor_parallel_size']}x{par['pipeline_parallel_size']}x{par['data_parallel_size']}"
                f"({node['data_parallel_size_local']})",
                "yes" if par["expert_parallel"] else "no",
                where,
            ])
    lines += _grid(rows)
    caps = [(i["name"], i["capacity"]) for i in plan["instances"] if i.get("capacity")]
    if caps:
        lines += ["", "capacity per GPU (estimate):"]
        crow = [["INSTANCE", "WEIGHTS_GB", "OFFLOADED_GB", "USABLE_GB", "KV_GB", "KV_TOKENS/DP_RANK"]]
        for name, cap in caps:
            crow.append([name, str(cap["weights_per_gpu_gb"]), str(cap["offloaded_per_gpu_gb"]),
                         str(cap["usable_per_gpu_gb"]), str(cap["kv_cache_per_gpu_gb"]),
                         str(cap["kv_tokens_per_dp_rank"])])
        lines += ["  " + line for line in _grid(crow)]
    router = plan["router"]
    lines += ["", f"router ({router['mode']}): {router['url']} -> "
              f"{len(router['prefill_urls'])} prefill, {len(router['decode_urls'])} decode"]
    for host in router["hosts"]:
        lines.append(f"  {host['host']}: metrics {host['metrics_url']}")
    lines += ["", "scrape jobs:"]
    for job in plan["scrape"]["jobs"]:
        lines.append(f"  {job['job_name']}: {', '.join(t['target'] for t in job['targets']) or '-'}")
    if plan["imex_domains"]:
        lines += ["", "IMEX domains:"]
        for domain in plan["imex_domains"]:
            lines.append(f"  {domain['name']}: {', '.join(domain['hosts'])}")
    if plan["warnings"]:
        lines += ["", "warnings:"]
        lines += [f"  - {w}" for w in plan["warnings"]]
    return "\n".join(lines)
