"""The load sweep's arithmetic, result schema, table and plot (bench/load_sweep.py,
lib/pd_bench/sweep.py) without a lab; the committed result in docs/img is
checked against the same schema. The vllm_parser test feeds the sweep's
arguments to `vllm bench serve`'s own parser."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pd_bench import sweep
from pd_bench.plan import gpu_unit

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "load_sweep.py"
COMMITTED = ROOT / "docs" / "img" / "load-sweep.json"
GPUS = {"prefill": 1, "decode": 1, "single": 1}


def bench_result(duration=10.0, prompt=1280, generated=320, completed=10, failed=0, errors=None) -> dict:
    """Shaped like the dict vllm.benchmarks.serve.main returns."""
    result = {"duration": duration, "completed": completed, "failed": failed, "total_input_tokens": prompt,
              "total_output_tokens": generated, "request_throughput": completed / duration,
              "output_throughput": generated / duration, "total_token_throughput": (prompt + generated) / duration,
              "errors": errors or []}
    for metric in sweep.LATENCY_METRICS:
        result[f"p50_{metric}_ms"], result[f"p99_{metric}_ms"] = 100.0, 250.0
    return result


def document(points: list[dict]) -> dict:
    return {"schema_version": sweep.SCHEMA_VERSION, "tool": "vllm bench serve (vLLM 0.32.0)", "gpu_unit": "CPU",
            "gpus": GPUS, "settings": {"model": "tiny-llama", "input_len": 128, "output_len": 32, "warmups": 2,
                                       "seed": 0, "connector": "NixlConnector"},
            "points": points}


def sample_document() -> dict:
    points = []
    for point in sweep.sweep_points(list(sweep.MODES), [1, 2, 4], [2.0]):
        scale = point["max_concurrency"] or 3
        points.append(sweep.point_figures(point, bench_result(duration=10 / scale), GPUS))
    return document(points)


def test_sweep_points_interleave_modes_and_size_each_point():
    points = sweep.sweep_points(["router", "direct"], [1, 8], [2.5], prompts_per_slot=4, min_prompts=12,
                                rate_seconds=8)
    assert [(p["mode"], p["sweep"], p["max_concurrency"], p["request_rate"], p["num_prompts"]) for p in points] == [
        ("router", "concurrency", 1, None, 12), ("direct", "concurrency", 1, None, 12),
        ("router", "concurrency", 8, None, 32), ("direct", "concurrency", 8, None, 32),
        ("router", "rate", None, 2.5, 20), ("direct", "rate", None, 2.5, 20)]


def test_bad_sweep_settings_name_the_setting_and_what_is_valid():
    with pytest.raises(sweep.SweepError, match="modes: routr not valid; valid modes are router, direct, single"):
        sweep.sweep_points(["routr"], [1], [])
    with pytest.raises(sweep.SweepError, match="--concurrency: '1,0' is not a comma-separated list"):
        sweep.parse_list("1,0", "--concurrency")
    with pytest.raises(sweep.SweepError, match="--rate: 'fast'"):
        sweep.parse_list("fast", "--rate", float)
    assert sweep.parse_list("1, 2,4", "--concurrency") == [1, 2, 4]


def test_tokens_per_gpu_second_follow_the_dashboards_tpgs_per_pool():
    point = {"mode": "router", "sweep": "concurrency", "max_concurrency": 4, "request_rate": None, "num_prompts": 16}
    figures = sweep.point_figures(point, bench_result(duration=10, prompt=1280, generated=320),
                                  {"prefill": 2, "decode": 1, "single": 1})
    # Prefill: prompt tokens over 2 GPUs; decode: generated tokens over 1.
    assert figures["tokens_per_gpu_s"] == {"prefill": 64.0, "decode": 32.0}
    # The whole deployment: (1280 + 320) tokens over 3 GPUs and 10 s.
    assert figures["deployment_tokens_per_gpu_s"] == pytest.approx(1600 / 30)
    assert figures["gpus"] == 3
    single = sweep.point_figures({**point, "mode": "single"}, bench_result(duration=10), GPUS)
    assert single["tokens_per_gpu_s"] == {"single": 160.0}
    assert single["deployment_tokens_per_gpu_s"] == 160.0
    assert set(sweep.POINT_KEYS) <= set(figures)


def test_failures_keep_the_last_line_of_the_first_error():
    point = sweep.sweep_points(["direct"], [1], [])[0]
    errors = ["", "Traceback...\nRuntimeError: prefill HTTP 500"]
    figures = sweep.point_figures(point, bench_result(failed=2, errors=errors), GPUS)
    assert figures["failed"] == 2
    assert figures["first_error"] == "RuntimeError: prefill HTTP 500"
    lines = sweep.report_lines(document([figures]))
    assert lines[-1] == "first failure (direct, concurrency): RuntimeError: prefill HTTP 500"


def test_pool_gpus_and_unit_come_from_the_plan():
    plan = {"scrape": {"pool_gpus": {"prefill": 8, "decode": 16}},
            "router": {"decode_urls": ["http://d0", "http://d1"]},
            "instances": [{"nodes": [{"device": "cuda"}]}]}
    assert sweep.pool_gpus(plan) == {"prefill": 8, "decode": 16, "single": 8}
    assert gpu_unit(plan) == "GPU"
    assert gpu_unit({"instances": {"p0": {"nodes": [{"device": "cpu"}]}}}) == "CPU"


def test_report_prints_every_point_within_120_columns():
    doc = sample_document()
    lines = sweep.report_lines(doc)
    assert len(lines) == 3 + len(doc["points"])
    assert max(len(line) for line in lines) <= 120
    router_c4 = next(line for line in lines if line.startswith("router") and " c=4 " in line)
    # 10 requests in 2.5 s; 1280 + 320 tokens over 2 CPUs: 320 per CPU-s.
    assert router_c4.split() == ["router", "c=4", "10", "0", "4.00", "128.0", "100", "250", "100", "250", "320",
                                 "prefill", "512", "decode", "128"]


def test_schema_check_names_what_is_missing():
    doc = sample_document()
    del doc["points"][1]["p99_itl_ms"]
    with pytest.raises(sweep.SweepError, match="point 1 lacks p99_itl_ms"):
        sweep.check_document(doc)
    with pytest.raises(sweep.SweepError, match="key 'gpu_unit' missing"):
        sweep.check_document({k: v for k, v in sample_document().items() if k != "gpu_unit"})


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "MPLBACKEND": "Agg"}, check=False)


def test_cli_report_and_plot(tmp_path):
    path = tmp_path / "load-sweep.json"
    path.write_text(json.dumps(sample_document()))
    report = run_script("report", str(path))
    assert report.returncode == 0, report.stderr
    assert report.stdout.splitlines() == sweep.report_lines(sample_document())
    png = tmp_path / "img" / "load-sweep.png"
    drawn = run_script("plot", str(path), str(png))
    assert drawn.returncode == 0, drawn.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000  # four panels with curves, not an empty canvas


def test_cli_rejects_a_bad_result_in_one_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**sample_document(), "schema_version": 0}))
    out = run_script("report", str(path))
    assert out.returncode == 2
    assert out.stderr.strip() == "load_sweep: load sweep result: schema_version 0, this code reads 1"
    bad_mode = run_script("run", "--modes", "router,fast")
    assert bad_mode.returncode == 2
    assert "modes: fast not valid" in bad_mode.stderr


@pytest.mark.skipif(not COMMITTED.exists(), reason="no committed lab result yet")
def test_committed_lab_result_is_complete_and_shown_in_the_docs():
    doc = sweep.check_document(json.loads(COMMITTED.read_text()))
    assert {p["mode"] for p in doc["points"]} == set(sweep.MODES)
    assert all(p["completed"] > 0 for p in doc["points"])
    assert (ROOT / "docs" / "img" / "load-sweep.png").exists()
    assert "img/load-sweep.png" in (ROOT / "docs" / "benchmarks.md").read_text()


@pytest.mark.vllm_parser
def test_vllm_bench_serve_accepts_the_sweeps_arguments(tmp_path):
    """Every point's arguments parse with vLLM's own `vllm bench serve` parser
    (with pd-direct registered as a backend), to the values meant."""
    python = os.environ.get("PD_VLLM_PYTHON") or str(ROOT / ".venv-vllm" / "bin" / "python")
    if not Path(python).exists():
        pytest.skip("no .venv-vllm")
    spec = {"router_url": "http://r:8000", "prefill_url": "http://p:8100", "decode_url": "http://d:8200",
            "model": "tiny-llama", "tokenizer": "/t", "input_len": 128, "output_len": 32, "warmups": 2, "seed": 0}
    points = sweep.sweep_points(list(sweep.MODES), [2], [1.5])
    code = f"""
import json, sys
sys.argv = ["x"]
sys.path.insert(0, {str(ROOT / 'bench')!r})
import load_sweep
from vllm.benchmarks import serve
from vllm.utils.argparse_utils import FlexibleArgumentParser
load_sweep._register_direct("http://p:8100")
parser = FlexibleArgumentParser()
serve.add_cli_args(parser)
spec = json.loads({json.dumps(spec)!r})
out = []
for point in json.loads({json.dumps(points)!r}):
    a = parser.parse_args(load_sweep.bench_args(spec, point))
    out.append([a.backend, a.base_url, a.max_concurrency, a.request_rate, a.num_prompts, a.random_input_len,
                a.random_output_len, a.metric_percentiles, a.percentile_metrics, a.ignore_eos])
print(json.dumps(out))
"""
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    parsed = json.loads(done.stdout.strip().splitlines()[-1])
    assert parsed[0][:5] == ["vllm", "http://r:8000", 2, float("inf"), 12]
    assert parsed[1][:2] == ["pd-direct", "http://d:8200"]
    assert parsed[5][:5] == ["vllm", "http://d:8200", None, 1.5, 12]
    assert parsed[0][5:] == [128, 32, "50,99", "ttft,itl,tpot,e2el", True]
