"""vllm_worker's lifecycle task files run by the real ansible-playbook on
localhost, on files in a temporary directory (no systemd here: the parts
that need none). The plan is the golden gb200 plan; its host gb200-tray-01
runs vllm-prefill-0.

- stale.yml: which installed instance units retire.yml removes, from the
  plan records and, for units older than the records, their env files;
  never the router's unit, never a unit the plan still has.
- running.yml: which instances run another configuration than their
  installed files, from the record the rendered unit's own ExecStartPre
  writes (run here as systemd would run it, paths moved under tmp).
- restart.yml: a batch that fails stops the rollout; later batches are not
  touched and the message names the instances left on their old processes
  (the plan's hosts are local here, and without systemd the first restart
  fails as a broken start would).
- drain.yml: scale-in waits for requests and held KV blocks, at most the
  router's request timeout from the plan for all instances together, and
  names each instance that still had work when it stops (metrics from a
  loopback HTTP server in vLLM's exposition format).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from conftest import BIN, ENV, ROOT
from specs import systemd_split

pytestmark = pytest.mark.playbook

GOLDEN = ROOT / "tests" / "golden" / "gb200-plan.json"
HOST = "gb200-tray-01"


def run_role_tasks(tmp_path: Path, tasks_from: str, result_var: str,
                   **extra) -> tuple[subprocess.CompletedProcess, object]:
    """Include vllm_worker's `tasks_from` for HOST on localhost; return the run and `result_var` afterwards."""
    out = tmp_path / f"{result_var}.json"
    book = tmp_path / "book.yml"
    book.write_text(f"""
- name: Run vllm_worker {tasks_from} on local files
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Include it
      ansible.builtin.include_role:
        name: vllm_worker
        tasks_from: {tasks_from}
    - name: Save {result_var}
      ansible.builtin.copy:
        content: "{{{{ {result_var} | to_json }}}}"
        dest: {out}
        mode: "0644"
""")
    variables = tmp_path / "vars.json"
    variables.write_text(json.dumps({"pd_plan": json.loads(GOLDEN.read_text()), "vllm_worker_render_host": HOST,
                                     **extra}))
    run = subprocess.run([str(BIN / "ansible-playbook"), str(book), "-i", "localhost,", "-c", "local",
                          "-e", f"ansible_python_interpreter={sys.executable}", "-e", f"@{variables}"],
                         capture_output=True, text=True, env={**ENV, "ANSIBLE_ROLES_PATH": str(ROOT / "roles")},
                         cwd=ROOT, check=False)
    return run, (json.loads(out.read_text()) if out.exists() else None)


def record(unit: str, pool: str, url: str) -> str:
    return json.dumps({"instance": unit.removeprefix("vllm-"), "pool": pool, "unit": unit, "url": url})


def test_stale_units_come_from_records_and_env_files_never_from_unit_text(tmp_path):
    config = tmp_path / "etc" / "vllm"
    config.mkdir(parents=True)
    # In the plan on this host: stays, record or not.
    (config / "vllm-prefill-0.env").write_text("A=1\n")
    (config / "vllm-prefill-0.json").write_text(record("vllm-prefill-0", "prefill", "http://10.0.0.1:8100"))
    # Dropped by the plan, with its record: drained at the record's URL.
    (config / "vllm-prefill-7.env").write_text("A=1\n")
    (config / "vllm-prefill-7.json").write_text(record("vllm-prefill-7", "prefill", "http://10.0.0.1:8107"))
    # Installed before the records existed: ours by its env file, no URL.
    (config / "vllm-decode-3.env").write_text("A=1\n")
    # Not instance units of ours: other names in the directory.
    (config / "router.env").write_text("A=1\n")
    (config / "notes.json").write_text("{}")
    (config / "vllm-decode-9.env.bak").write_text("A=1\n")
    run, stale = run_role_tasks(tmp_path, "stale.yml", "_vllm_worker_stale", vllm_worker_config_dir=str(config))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert stale == [
        {"unit": "vllm-decode-3", "instance": "decode-3", "pool": None, "url": None},
        {"unit": "vllm-prefill-7", "instance": "prefill-7", "pool": "prefill", "url": "http://10.0.0.1:8107"},
    ]
    # The unit without a record is named in a warning: it cannot be drained.
    assert "WARNING: vllm-decode-3 on localhost is not in the plan and has no plan record" in run.stdout


def test_nothing_is_stale_when_every_installed_unit_is_planned(tmp_path):
    config = tmp_path / "etc" / "vllm"
    config.mkdir(parents=True)
    (config / "vllm-prefill-0.env").write_text("A=1\n")
    (config / "vllm-prefill-0.json").write_text(record("vllm-prefill-0", "prefill", "http://10.0.0.1:8100"))
    run, stale = run_role_tasks(tmp_path, "stale.yml", "_vllm_worker_stale", vllm_worker_config_dir=str(config))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert stale == []
    assert "WARNING" not in run.stdout


UNIT = "vllm-prefill-0"


def exec_start_pre(unit_file: Path) -> list[str]:
    text = unit_file.read_text().replace("\\\n", " ")
    (line,) = [ln for ln in text.splitlines() if ln.startswith("ExecStartPre=")]
    return systemd_split(line.removeprefix("ExecStartPre="))


def test_an_instance_runs_what_it_recorded_at_start_whatever_run_wrote_its_files(tmp_path):
    root, run_dir = tmp_path / "root", tmp_path / "run"
    run, _ = run_role_tasks(tmp_path, "files.yml", "_vllm_worker_files", vllm_worker_render_root=str(root))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    unit_file = root / "etc" / "systemd" / "system" / f"{UNIT}.service"
    env_file = root / "etc" / "vllm" / f"{UNIT}.env"
    argv = exec_start_pre(unit_file)
    # The unit records its own unit and env file at every start.
    assert argv[1:3] == ["backoff", f"/run/pd-worker/{UNIT}"]
    assert argv[-2:] == [f"/etc/systemd/system/{UNIT}.service", f"/etc/vllm/{UNIT}.env"]
    gate = ROOT / "roles" / "pd_systemd" / "files" / "pd-worker-gate"
    (run_dir / UNIT).mkdir(parents=True)
    # Start as systemd would, the node's paths under tmp (no backoff wait: a first start).
    start = [str(gate), "backoff", str(run_dir / UNIT), *argv[3:5], str(unit_file), str(env_file)]
    host_paths = {"vllm_worker_gate": str(gate), "vllm_worker_unit_dir": str(unit_file.parent),
                  "vllm_worker_config_dir": str(env_file.parent),
                  "_vllm_worker_gate_state": str(run_dir) + "/{{ _w.unit }}"}

    def drifted() -> list[str]:
        result, units = run_role_tasks(tmp_path, "running.yml", "_vllm_worker_drifted", **host_paths)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        return units

    # Installed, never started: no record, so it counts as different.
    assert drifted() == [UNIT]
    subprocess.run(start, check=True, capture_output=True)
    assert drifted() == []
    # Another run rewrote the env file and stopped before restarting this
    # instance: this run sees it, though it writes nothing itself.
    env_file.write_text(env_file.read_text() + "VLLM_LOGGING_LEVEL=DEBUG\n")
    assert drifted() == [UNIT]
    subprocess.run(start, check=True, capture_output=True)  # the restart records the new files
    assert drifted() == []


ROLLOUT = """
- name: Pending restarts as main.yml records them
  hosts: all
  gather_facts: false
  tasks:
    - name: Every instance of the plan changed, none stopped
      ansible.builtin.set_fact:
        _vllm_worker_pending: "{{ pd_plan | pd_host_workers(inventory_hostname) | map(attribute='unit') | list }}"
        _vllm_worker_stopped: []
    - name: Restart rolling
      ansible.builtin.include_role:
        name: vllm_worker
        tasks_from: restart.yml
"""


def test_a_failed_batch_stops_the_rollout_and_names_what_still_runs_old(tmp_path):
    plan = json.loads(GOLDEN.read_text())
    # Without announcers (router discovery would first stop them through
    # systemctl, which this machine has no systemd for): the batch fails at
    # its health gate, the subject here.
    for instance in plan["instances"]:
        instance.pop("announce", None)
    hosts = sorted(h for h, facts in plan["hosts"].items() if facts["units"])
    (tmp_path / "book.yml").write_text(ROLLOUT)
    (tmp_path / "vars.json").write_text(json.dumps({"pd_plan": plan}))
    run = subprocess.run([str(BIN / "ansible-playbook"), str(tmp_path / "book.yml"), "-i", ",".join(hosts) + ",",
                          "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}",
                          "-e", f"@{tmp_path / 'vars.json'}", "-e", "vllm_worker_start_timeout_sec=5"],
                         capture_output=True, text=True, env={**ENV, "ANSIBLE_ROLES_PATH": str(ROOT / "roles")},
                         cwd=ROOT, check=False)
    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-3000:]
    # Prefill first, one instance per batch: prefill-0, prefill-1, then decode-0.
    assert "rolling prefill: prefill-0" in out, out[-3000:]
    assert ("Rollout stopped: prefill-0 did not come up ((Re)start prefill-0 failed, see above). Not restarted, "
            "still serving from their old processes: prefill-1, decode-0.") in " ".join(out.split()), out[-3000:]
    # Nothing of a later batch ran.
    assert "(Re)start prefill-1" not in out and "(Re)start decode-0" not in out


def metrics(running: float, waiting: float = 0.0, kv: float = 0.0) -> str:
    labels = '{engine="0",model_name="deepseek-ai/DeepSeek-R1"}'
    return (f"# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{labels} {running}\n"
            f"vllm:num_requests_waiting{labels} {waiting}\nvllm:kv_cache_usage_perc{labels} {kv}\n")


class Instances(BaseHTTPRequestHandler):
    """/<name>/metrics of removed instances: busy never drains, kv holds
    blocks decode has not pulled, late finishes its request after the first
    probe, idle has nothing."""

    seen: ClassVar[dict[str, list[float]]] = {}

    def do_GET(self):
        name = self.path.split("/")[1]
        Instances.seen.setdefault(name, []).append(time.monotonic())
        count = len(Instances.seen[name])
        body = {"busy": metrics(2, 1), "kv": metrics(0, 0, 0.05), "idle": metrics(0),
                "late": metrics(1 if count <= 1 else 0)}[name].encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_drain_waits_at_most_the_routers_request_timeout_and_names_what_still_had_work(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Instances)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    closed = ThreadingHTTPServer(("127.0.0.1", 0), Instances)
    down = f"http://127.0.0.1:{closed.server_address[1]}"
    closed.server_close()  # nothing listens there: an instance already down
    plan = json.loads(GOLDEN.read_text())
    plan["router"]["effective"]["request_timeout_secs"] = 20
    draining = [{"unit": f"vllm-{name}", "instance": name, "url": url}
                for name, url in (("late", f"{base}/late"), ("busy", f"{base}/busy"), ("kv", f"{base}/kv"),
                                  ("idle", f"{base}/idle"), ("gone", down))]
    try:
        run, drained = run_role_tasks(tmp_path, "drain.yml", "_vllm_worker_drained", pd_plan=plan,
                                      _vllm_worker_draining=draining)
    finally:
        server.shutdown()
    out = " ".join(run.stdout.replace("''", "'").split())  # YAML output doubles a quote in a quoted string
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert {d["instance"]: (d["answered"], d["requests"], d["kv_usage"]) for d in drained} == {
        "busy": (True, 3, 0.0), "kv": (True, 0, 0.05), "late": (True, 0, 0.0), "idle": (True, 0, 0.0),
        "gone": (False, 0, 0.0)}
    assert ("WARNING: busy (vllm-busy on localhost) still has 3 request(s) running or waiting after the router's "
            "request timeout (20 s): stopping it fails them") in out, out[-3000:]
    assert "WARNING: kv (vllm-kv on localhost) still has 0 request(s) running or waiting and holds KV cache " \
           "blocks (5.0 %; a prefill instance keeps them until decode pulled them)" in out, out[-3000:]
    assert "late: drained, no request running or waiting and no KV block held" in out
    assert "idle: drained" in out and "gone: not answering (down already), nothing in flight" in out
    assert out.count("WARNING") == 2
    # late was probed again (5 s later) until it finished; the deadline is
    # shared, so busy (after it) waited only what was left of the 20 s and kv
    # got one probe, not 20 s more each. Probes are at least 5 s apart and
    # late's second one came 5 s or more after the deadline was set, so busy
    # is probed again only while under 15 s of the deadline remain ahead: at
    # most 4 probes (at 5, 10, 15 and 20 s), however slow a loaded machine
    # makes each one; a wait of its own (20 s) would give it 5 or more.
    seen = Instances.seen
    assert [len(seen[name]) for name in ("late", "kv", "idle")] == [2, 1, 1], seen
    assert 1 <= len(seen["busy"]) <= 4, seen
    assert seen["idle"][-1] - seen["late"][0] <= 20 + 25, seen
