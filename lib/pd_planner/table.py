"""Plain-text views of a plan (like `terraform plan`): a per-pool summary that
fits a terminal, printed by every run, and the full table (one row per
instance node), written to render_dir/plan.txt by render.yml and printed
with -v."""

from __future__ import annotations

# The summary's bound: 120 columns on the terminal, whatever the cluster's
# size, less the 8 columns the YAML callback indents a debug message by.
SUMMARY_WIDTH = 112


def _ranges(values: list[int]) -> str:
    if not values:
        return "-"
    if values == list(range(values[0], values[-1] + 1)) and len(values) > 2:
        return f"{values[0]}-{values[-1]}"
    return ",".join(str(v) for v in values)


def _grid(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]


def _fit(line: str, width: int) -> str:
    return line if len(line) <= width else line[: width - 3] + "..."


def _distinct(values) -> str:
    return ",".join(dict.fromkeys(str(v) for v in values))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def plan_summary(plan: dict, width: int = SUMMARY_WIDTH) -> str:
    """One line per pool and a few totals, every line at most `width` columns
    (a 288-tray cluster's summary is as long as a 4-tray one's); the plan's
    warnings are counted here and shown by the pd_plan filter as Ansible
    warnings."""
    hosts = plan["hosts"]
    gpus = sum(h.get("gpus") or 0 for h in hosts.values())
    model = plan["model"]
    lines = [
        f"vLLM {plan['vllm_version']} | {plan['connector']} | {model['served_name']} ({model['path']})",
        f"{_count(len(hosts), 'host')}, {_count(gpus, 'GPU')} | cluster {plan['cluster_cidr']} "
        f"| kv_parallel_size {plan['kv_parallel_size']}",
        "",
    ]
    rows = [["POOL", "INSTANCES", "HOSTS", "GPUS", "GPUS/INSTANCE", "TPxPPxDP", "EP", "KV_TOKENS/DP_RANK", "FIRST URL"]]
    pools: dict[str, list[dict]] = {}
    for inst in plan["instances"]:
        pools.setdefault(inst["pool"], []).append(inst)
    for pool, instances in pools.items():
        pars = [i["parallelism"] for i in instances]
        rows.append([
            pool,
            str(len(instances)),
            str(len({n["host"] for i in instances for n in i["nodes"]})),
            str(sum(i["gpus_total"] for i in instances)),
            _distinct(i["gpus_total"] for i in instances),
            _distinct(f"{p['tensor_parallel_size']}x{p['pipeline_parallel_size']}x{p['data_parallel_size']}"
                      for p in pars),
            _distinct("yes" if p["expert_parallel"] else "no" for p in pars),
            _distinct((i.get("capacity") or {}).get("kv_tokens_per_dp_rank", "-") for i in instances),
            instances[0]["url"],
        ])
    lines += _grid(rows)
    router = plan["router"]
    lines += ["", f"router ({router['mode']}): {router['url']} -> "
              f"{len(router['prefill_urls'])} prefill, {len(router['decode_urls'])} decode"]
    jobs = plan["scrape"]["jobs"]
    lines.append(f"monitoring: {_count(len(jobs), 'scrape job')}, "
                 f"{_count(sum(len(j['targets']) for j in jobs), 'target')}")
    if plan["imex_domains"]:
        domains = plan["imex_domains"]
        lines.append(f"IMEX: {_count(len(domains), 'domain')}, "
                     f"{_count(sum(len(d['hosts']) for d in domains), 'host')}")
    if plan["warnings"]:
        lines.append(f"{_count(len(plan['warnings']), 'warning')} (printed as Ansible warnings)")
    lines.append("full table (every instance node, port and target): -v, or render.yml's render_dir/plan.txt")
    return "\n".join(_fit(line, width) for line in lines)


def plan_table(plan: dict) -> str:
    """Every instance node, capacity, router, scrape target, IMEX domain and
    warning as aligned text (as wide as its longest row)."""
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
