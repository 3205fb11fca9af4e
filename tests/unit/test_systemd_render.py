"""systemd helpers: exact argv in ExecStart, env files, per-host view, restart batches."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from conftest import ROOT, make_spec
from pd_planner import PlanError, build_plan
from pd_planner import systemd as sd
from pd_planner.router import listed_workers, unit_settings
from specs import systemd_split

VERIFY = ROOT / "roles" / "pd_systemd" / "files" / "pd-verify-unit"


@pytest.mark.parametrize("argv", [
    ["/opt/vllm/0.33.0/bin/vllm", "serve", "/models/r1", "--port", "8100"],
    ["/bin/x", "--kv-transfer-config", '{"kv_connector":"NixlConnector","kv_role":"kv_both"}'],
    ["/bin/x", "--chat-template", "a b\tc", "--x", "100%", "--y", "$HOME", "--z", "back\\slash", "--e", ""],
    ["/bin/x", "--eplb-config", '{"window_size":1000,"step_interval":3000}', "--quote", "it's \"so\""],
])
def test_exec_line_round_trips_every_argument(argv):
    line = sd.exec_line(argv)
    assert systemd_split(line) == argv
    # No bare specifier or reference survives: systemd would expand it.
    assert "$HOME" not in line.replace("$$HOME", "")


def test_exec_line_keeps_only_the_requested_env_reference():
    line = sd.exec_line(["/bin/r", "--api-key", "${VLLM_ROUTER_API_KEY}", "--other", "${HOME}"],
                        keep_env=["VLLM_ROUTER_API_KEY"])
    assert "--api-key ${VLLM_ROUTER_API_KEY}" in line
    assert "$${HOME}" in line


def test_exec_line_rejects_a_relative_program():
    with pytest.raises(PlanError, match="absolute path"):
        sd.exec_line(["vllm", "serve"])


def test_env_file_quotes_what_needs_it_and_rejects_bad_names():
    text = sd.env_file({"B": "two words", "A": "10.0.0.1", "C": 'q"$x'})
    assert text.splitlines() == ["A=10.0.0.1", 'B="two words"', 'C="q\\"\\$x"']
    with pytest.raises(PlanError, match="not valid"):
        sd.env_line("1BAD", "x")
    with pytest.raises(PlanError, match="newline"):
        sd.env_line("GOOD", "a\nb")


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_verify_unit_fails_on_a_warning_not_only_on_errors(tmp_path):
    good = tmp_path / "candidate"
    good.write_text("[Service]\nType=exec\nExecStart=/bin/true\n")
    ok = subprocess.run([str(VERIFY), str(good), "x.service"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    good.write_text("[Service]\nTyp=exec\nExecStart=/bin/true\n")
    bad = subprocess.run([str(VERIFY), str(good), "x.service"], capture_output=True, text=True)
    assert bad.returncode == 1 and "Unknown key" in bad.stderr and "x.service" in bad.stderr


def test_host_workers_split_a_multi_node_instance_into_leader_and_follower():
    plan = build_plan(make_spec(2, 2))
    decode = next(i for i in plan["instances"] if i["role"] == "decode")
    leader, follower = decode["nodes"][0]["host"], decode["nodes"][1]["host"]
    on_leader = [w for w in sd.host_workers(plan, leader) if w["unit"] == decode["unit"]]
    on_follower = [w for w in sd.host_workers(plan, follower) if w["unit"] == decode["unit"]]
    assert on_leader[0]["leader"] and not on_follower[0]["leader"]
    assert on_follower[0]["leader_host"] == leader and on_follower[0]["peer_hosts"] == [leader]
    assert "--headless" in on_follower[0]["serve_args"]
    assert sd.host_workers(plan, "no-such-host") == []


def test_restart_batches_are_per_pool_followers_first_and_sized():
    plan = build_plan(make_spec(2, 2))
    prefill = [i for i in plan["instances"] if i["role"] == "prefill"]
    decode = next(i for i in plan["instances"] if i["role"] == "decode")
    # The sample's prefill: one instance per tray.
    pending = {prefill[0]["nodes"][0]["host"]: [prefill[0]["unit"]],
               prefill[1]["nodes"][0]["host"]: [prefill[1]["unit"]],
               decode["nodes"][1]["host"]: [decode["unit"]]}
    batches = sd.restart_batches(plan, pending, batch_size=1)
    assert [b["pool"] for b in batches] == ["prefill", "prefill", "decode"]
    assert [m["instance"] for b in batches for m in b["instances"]] == [
        prefill[0]["name"], prefill[1]["name"], decode["name"]]
    # A pending follower restarts its whole instance, leader last.
    assert [s["host"] for s in batches[2]["starts"]] == [decode["nodes"][1]["host"], decode["nodes"][0]["host"]]
    assert len(sd.restart_batches(plan, pending, batch_size=2)) == 2
    assert sd.restart_batches(plan, {}, 1) == []
    # Stopped (new) instances serve nothing: they start together, first.
    stopped = {decode["nodes"][0]["host"]: [decode["unit"]]}
    mixed = sd.restart_batches(plan, pending, 1, stopped=stopped)
    assert [b["rolling"] for b in mixed] == [False, True, True]
    assert [m["instance"] for m in mixed[0]["instances"]] == [decode["name"]]
    with pytest.raises(PlanError, match="at least 1"):
        sd.restart_batches(plan, pending, 0)


UNIT = """# header
ExecStart=/opt/vllm-router/0.1.17/bin/vllm-router --host 10.0.0.5 \\
    --vllm-pd-disaggregation \\
    --prefill http://10.0.0.12:8100 none \\
    --prefill http://10.0.0.11:8100 none \\
    --decode http://10.0.0.21:8200 \\
    --policy round_robin
"""


def test_router_unit_settings_ignore_the_worker_set():
    grown = UNIT.replace("    --decode", "    --prefill http://10.0.0.13:8100 none \\\n    --decode")
    assert unit_settings(grown) == unit_settings(UNIT)
    assert unit_settings(UNIT.replace("round_robin", "cache_aware")) != unit_settings(UNIT)


def test_listed_workers_reads_typed_entries():
    answer = {"workers": [{"url": "http://b:8100", "worker_type": "Prefill"},
                          {"url": "http://a:8100", "worker_type": "prefill"},
                          {"url": "http://d:8200", "worker_type": "decode"}]}
    assert listed_workers(answer) == {"prefill": ["http://a:8100", "http://b:8100"], "decode": ["http://d:8200"]}
