"""pd_wait_healthy's journal reader: vLLM's startup phase from its own log lines.

The lines are vLLM 0.33's: its log layout (vllm/logger.py _FORMAT, as a real
CPU run printed it: "(APIServer pid=29440) INFO 12-04 16:08:28 [api_utils.py:286] ...")
around the messages its source logs, with the file and line that log them; the
shard bar is weight_utils.py's _BAR_FORMAT, the CUDA graph bar tqdm's default
layout. test_messages_are_vllms checks every message template against the
0.33.0 and 0.34.0 sources where the parser overlays are unpacked.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from conftest import ROOT

_spec = importlib.util.spec_from_file_location("pd_wait_healthy_action", ROOT / "plugins/action/pd_wait_healthy.py")
action = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(action)
journal_phase = action.journal_phase

ENGINE = "(EngineCore_DP0 pid=4711) INFO 12-04 16:08:{:02d} [{}] {}"

# (source file in vllm/, the message as logged) in the order a start logs them.
STARTUP = [
    ("v1/worker/gpu_model_runner.py:4979", "Starting to load model /models/deepseek-r1-nvfp4..."),
    ("model_executor/model_loader/default_loader.py:507", "Loading weights took 412.87 seconds"),
    ("v1/worker/gpu_model_runner.py:5089", "Model loading took 113.98 GiB memory and 415.223104 seconds"),
    ("compilation/monitor.py:40", "Starting torch.compile"),
    ("compilation/backends.py:1188", "Dynamo bytecode transform time: 9.37 s"),
    ("compilation/backends.py:418", "Compiling a graph for compile range (1, 65536) takes 41.02 s"),
    ("compilation/monitor.py:20", "torch.compile took 52.61 s in total"),
    ("v1/worker/gpu_worker.py:773", "Available KV cache memory: 44.91 GiB"),
    ("v1/core/kv_cache_utils.py:1148",
     "GPU KV cache size: 1,285,006 tokens, Maximum concurrency for 65,536 tokens per request: 19.61x"),
    ("v1/worker/gpu_model_runner.py:6304", "Profiling CUDA graph memory: FULL=51 (largest=512)"),
    ("v1/worker/gpu_model_runner.py:6516", "Graph capturing finished in 14 secs, took 1.92 GiB"),
    ("v1/engine/core.py:406",
     "init engine (profile, create kv cache, warmup model) took 96.13 s (compilation: 52.61 s)"),
    ("entrypoints/launchers/api_server/entry.py:139", "Starting vLLM server on http://10.20.0.11:8100"),
]
EXPECTED = [
    "loading the model",
    "weights loaded in 412.87 s",
    "model loaded (113.98 GiB per GPU)",
    "compiling (torch.compile)",
    "compiling (torch.compile, graphs traced)",
    "compiling (torch.compile, range (1, 65536) done)",
    "compiled in 52.61 s",
    "memory profiled (44.91 GiB for the KV cache)",
    "KV cache allocated (1,285,006 tokens)",
    "capturing CUDA graphs",
    "CUDA graphs captured in 14 s",
    "engine ready after 96.13 s, starting the API server",
    "API server starting on http://10.20.0.11:8100",
]
# weight_utils.py _BAR_FORMAT, as tqdm writes it: "\r" + the bar + "\n".
SHARDS = "\rLoading safetensors checkpoint shards:  {pct:3d}% Completed | {k}/{n} [01:02<01:02,  1.30it/s]"
# tqdm's default layout (gpu_model_runner.py:6592 passes only desc): frames
# joined by "\r" in one journal line until the bar closes.
GRAPHS = "\rCapturing CUDA graphs (decode, FULL):  {pct:2d}%|{bar}| {k}/{n} [00:02<00:03,  9.12it/s]"


def _logged(index: int) -> str:
    where, message = STARTUP[index]
    return ENGINE.format(index, where.split("/")[-1], message)


@pytest.mark.parametrize("index", range(len(STARTUP)))
def test_each_phase_is_named_from_its_line(index):
    lines = [_logged(i) for i in range(index + 1)]
    assert journal_phase(lines) == EXPECTED[index]


def test_shards_k_of_n_from_the_latest_bar_frame():
    lines = [_logged(0), SHARDS.format(pct=0, k=0, n=163), SHARDS.format(pct=50, k=81, n=163)]
    assert journal_phase(lines) == "loading shards 81/163"
    # Other DP ranks' info lines after the bar do not hide it.
    lines.append("(EngineCore_DP1 pid=4712) INFO 12-04 16:09:01 [parallel_state.py:1325] rank 1 in world size 4")
    assert journal_phase(lines) == "loading shards 81/163"
    # The eager strategy's bar says so in its description.
    eager = SHARDS.replace("shards:", "shards (eager):").format(pct=100, k=163, n=163)
    assert journal_phase([eager]) == "loading shards 163/163"


def test_cuda_graph_bar_frames_in_one_line():
    frames = "".join(GRAPHS.format(pct=p, bar="#" * (p // 10) + " " * (10 - p // 10), k=k, n=51)
                     for p, k in ((0, 0), (39, 20), (78, 40)))
    assert journal_phase([_logged(9), frames]) == "capturing CUDA graphs (decode, FULL) 40/51"


def test_model_runner_v2_lines():
    # v1/worker/gpu/model_runner.py:412 and cudagraph_utils.py's bar ("{desc} ({mode.name})").
    assert journal_phase([ENGINE.format(1, "model_runner.py:412", "Loading model from scratch...")]) == \
        "loading the model"
    bar = GRAPHS.replace("(decode, FULL)", "(FULL)").format(pct=39, bar="###       ", k=20, n=51)
    assert journal_phase([bar]) == "capturing CUDA graphs (FULL) 20/51"


def test_no_phase_in_unrelated_lines():
    assert journal_phase([]) is None
    assert journal_phase(["(APIServer pid=29440) INFO 12-04 16:08:28 [api_utils.py:286] non-default args: "
                          "{'host': '127.0.0.1', 'port': 18123}"]) is None


def _sources() -> list[Path]:
    dirs = [os.environ.get(f"PD_VLLM_OVERLAY_{v}", "") for v in ("0_33_0", "0_34_0")]
    dirs = [Path(d) for d in dirs if d] or [ROOT / ".venv-vllm" / f"overlay-{v}" for v in ("0.33.0", "0.34.0")]
    return [d / "vllm" for d in dirs if (d / "vllm").is_dir()]


# The format strings behind STARTUP and the bars, as vLLM's source spells them.
# v1/worker/gpu_model_runner.py is the V1 model runner, gone in 0.34.0: its
# templates are checked where the file exists.
V1_RUNNER = {
    "v1/worker/gpu_model_runner.py": [
        '"Starting to load model %s..."', '"Model loading took %s GiB memory and %.6f seconds"',
        '"Profiling CUDA graph memory: %s"', '"Graph capturing finished in %.0f secs, took %.2f GiB"',
        'desc="Capturing CUDA graphs ({}, {})"'],
}
TEMPLATES = {
    "v1/worker/gpu/model_runner.py": [
        '"Loading model from scratch..."', '"Model loading took %s GiB memory and %.6f seconds"',
        '"Graph capturing finished in %.0f secs, took %.2f GiB"'],
    "v1/worker/gpu/cudagraph_utils.py": ['progress_bar_desc: str = "Capturing CUDA graphs"',
                                         'desc=f"{progress_bar_desc} ({mode.name})"'],
    "model_executor/model_loader/default_loader.py": ['"Loading weights took %.2f seconds"'],
    "model_executor/model_loader/weight_utils.py": ['"Loading safetensors checkpoint shards"',
                                                   '"{desc}: {percentage:3.0f}% Completed | {n_fmt}/{total_fmt} ['],
    "compilation/monitor.py": ['"%storch.compile took %.2f s in total"', '"%sStarting torch.compile"'],
    "compilation/backends.py": ['"%sDynamo bytecode transform time: %.2f s"',
                                '"%sCompiling a graph for compile range %s takes %.2f s"'],
    "v1/worker/gpu_worker.py": ['"Available KV cache memory: %s GiB"'],
    "v1/core/kv_cache_utils.py": ['"%s KV cache size: %s tokens, "'],
    "v1/engine/core.py": ['"init engine (profile, create kv cache, warmup model) took "'],
    "entrypoints/launchers/api_server/entry.py": ['"Starting vLLM server on %s"'],
}


@pytest.mark.vllm_parser
def test_messages_are_vllms():
    sources = _sources()
    if not sources:
        if os.environ.get("PD_REQUIRE_VLLM_PARSER"):
            pytest.fail("no vLLM overlay (make vllm-venv)")
        pytest.skip("no vLLM overlay unpacked (make vllm-venv)")
    for source in sources:
        v1 = {f: t for f, t in V1_RUNNER.items() if (source / f).exists()}
        for relative, templates in {**TEMPLATES, **v1}.items():
            text = (source / relative).read_text()
            for template in templates:
                assert template in text, f"{source}/{relative} no longer logs {template}"
