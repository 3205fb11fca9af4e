"""Hardening of the rendered units, scored by the real `systemd-analyze security --offline`.

render.yml writes every host's units for the lab and the GB200 inventories; each
unit of the workers, Prometheus, Alertmanager and dcgm-exporter must score at or
under 3.5 (systemd's "OK" band starts below 4), run as no root, and reach only
the devices it needs. Also the worker start gate's restart backoff (the
script systemd runs before every start).
"""

from __future__ import annotations

import http.server
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from conftest import BIN, ENV, ROOT
from stand_in import StandInWorker

pytestmark = pytest.mark.playbook

MAX_EXPOSURE = 3.5
GATE = ROOT / "roles" / "pd_systemd" / "files" / "pd-worker-gate"
# The router's unit belongs to the vllm_router role and is scored there.
# Workers, their announcers (router discovery zmq), Prometheus, Alertmanager, dcgm-exporter.
SCORED = re.compile(r"^(vllm-(prefill|decode)-\d+(-announce)?|prometheus|prometheus-alertmanager|dcgm-exporter)"
                    r"\.service$")
# NVIDIA (GPUs, UVM, caps, IMEX channels), InfiniBand verbs, RDMA CM, GDRCopy.
GPU_DEVICES = re.compile(r"^(char-nvidia\*|char-infiniband\*|/dev/infiniband/rdma_cm|char-gdrdrv) rw$")


def _analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if not tool:
        pytest.fail("systemd-analyze not found: install systemd (Debian 12 has 252, which scores units offline)")
    help_text = subprocess.run([tool, "security", "--help"], capture_output=True, text=True, check=False).stdout
    if "--offline" not in help_text or "--root" not in help_text:
        pytest.fail(f"{tool} has no `security --offline --root` (systemd 250 or newer needed)")
    return tool


def _render(inventory: str, out: Path, hosts: str) -> Path:
    # The lab's hosts are podman containers: rendering needs no connection.
    result = subprocess.run(
        [str(BIN / "ansible-playbook"), str(ROOT / "playbooks" / "render.yml"),
         "-i", str(ROOT / "inventories" / inventory),
         "-e", f"render_dir={out}", "-e", f"render_hosts={hosts}", "-e", "ansible_connection=local"],
        capture_output=True, text=True, env=ENV, cwd=ROOT, check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    return out


@pytest.fixture(scope="module")
def renders(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("hardening")
    return {
        "lab": _render("lab", base / "lab", "lab-ctl,lab-prefill-0,lab-decode-0"),
        # A decode leader and its follower, a prefill tray (dcgm-exporter), the controller.
        "gb200": _render("gb200", base / "gb200", "cpu-ctl-01,gb200-tray-01,gb200-tray-03,gb200-tray-04"),
    }


def _units(render: Path) -> list[tuple[Path, str]]:
    return sorted((host, unit.name) for host in render.iterdir() if host.is_dir()
                  for unit in (host / "etc/systemd/system").glob("*.service") if SCORED.match(unit.name))


def _exposure(tool: str, root: Path, unit: str) -> float:
    result = subprocess.run([tool, "security", "--offline=true", f"--root={root}", "--no-pager", unit],
                            capture_output=True, text=True, check=False)
    found = re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+\.\d+)", result.stdout)
    assert found, f"{root.name}/{unit}: no score from systemd-analyze: {result.stdout[-500:]}{result.stderr}"
    return float(found.group(1))


def _settings(path: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", " ")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_every_unit_scores_at_most_3_5(renders):
    tool = _analyze()
    scores = {}
    for name, render in renders.items():
        for host, unit in _units(render):
            scores[f"{name}/{host.name}/{unit}"] = _exposure(tool, host, unit)
    # Prefill and decode leaders, a follower (tray-04), Prometheus, Alertmanager and dcgm-exporter.
    for key in ("lab/lab-prefill-0/vllm-prefill-0.service", "gb200/gb200-tray-04/vllm-decode-0.service",
                "lab/lab-prefill-0/vllm-prefill-0-announce.service",
                "gb200/gb200-tray-03/vllm-decode-0-announce.service",
                "lab/lab-ctl/prometheus.service", "gb200/cpu-ctl-01/prometheus-alertmanager.service",
                "gb200/gb200-tray-01/dcgm-exporter.service"):
        assert key in scores, sorted(scores)
    exposed = {key: score for key, score in scores.items() if score > MAX_EXPOSURE}
    assert not exposed, f"exposure over {MAX_EXPOSURE}: {exposed} (all: {scores})"


def test_no_unit_runs_as_root(renders):
    for render in renders.values():
        for host, unit in _units(render):
            settings = _settings(host / "etc/systemd/system" / unit)
            user = settings.get("User", ["root"])[-1]
            assert settings.get("DynamicUser") == ["yes"] or user not in ("root", "0"), f"{host.name}/{unit}"
            assert settings.get("CapabilityBoundingSet") == [""], f"{host.name}/{unit} keeps capabilities"
            assert settings.get("NoNewPrivileges") == ["yes"], f"{host.name}/{unit}"


def test_workers_reach_only_gpu_and_rdma_devices_on_gpu_hosts(renders):
    for name, render in renders.items():
        for host, unit in _units(render):
            if not unit.startswith("vllm-") or unit.endswith("-announce.service"):
                continue
            settings = _settings(host / "etc/systemd/system" / unit)
            if name == "gb200":
                assert settings.get("DevicePolicy") == ["closed"], f"{host.name}/{unit}"
                allowed = settings.get("DeviceAllow", [])
                assert allowed and all(GPU_DEVICES.match(entry) for entry in allowed), allowed
                assert "PrivateDevices" not in settings
            else:
                # The lab's CPU build opens no device at all.
                assert settings.get("PrivateDevices") == ["yes"], f"{host.name}/{unit}"
                assert "DeviceAllow" not in settings


def test_systemd_restarts_are_gated_and_never_give_up(renders):
    """Every worker start (systemd's own restarts too) runs the backoff before and the
    health + warm-up gate after the process; no start limit leaves a unit failed."""
    for render in renders.values():
        for host, unit in _units(render):
            if not unit.startswith("vllm-") or unit.endswith("-announce.service"):
                continue
            settings = _settings(host / "etc/systemd/system" / unit)
            assert settings["StartLimitIntervalSec"] == ["0"], f"{host.name}/{unit}"
            assert settings["Type"] == ["exec"] and settings["Restart"] == ["always"]
            assert int(settings["RestartSec"][0]) <= 2
            assert settings["ExecStartPre"][0].split()[:2] == ["/usr/local/libexec/pd-worker-gate", "backoff"]
            post = settings["ExecStartPost"][0].split()
            role = "follower" if "--headless" in (host / "etc/systemd/system" / unit).read_text() else "leader"
            assert post[:2] == ["/usr/local/libexec/pd-worker-gate", role], f"{host.name}/{unit}: {post}"


def _gate(*args: str, state: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(GATE), *args], capture_output=True, text=True, check=False,
                          env={**os.environ, "MAINPID": ""}, cwd=state)


def test_gate_backoff_doubles_after_unhealthy_starts_and_resets_after_a_healthy_one(tmp_path):
    counts = []
    for _ in range(4):
        result = _gate("backoff", str(tmp_path), "0.01", "0.02", state=tmp_path)
        assert result.returncode == 0, result.stderr
        counts.append((tmp_path / "failed-starts").read_text().strip())
        if counts[-1] != "1":
            assert "never became healthy: waiting" in result.stderr
    # Each start counts until one becomes healthy (the leader gate writes 0).
    assert counts == ["1", "2", "3", "4"]
    assert "waiting 0 s" in result.stderr  # capped at the maximum (0.02 s prints as 0)
    (tmp_path / "failed-starts").write_text("0\n")
    result = _gate("backoff", str(tmp_path), "10", "300", state=tmp_path)
    assert result.returncode == 0 and "waiting" not in result.stderr


def test_gate_backoff_delays():
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.SourceFileLoader("pd_worker_gate", str(GATE))
    spec = importlib.util.spec_from_loader("pd_worker_gate", loader)
    gate = importlib.util.module_from_spec(spec)
    loader.exec_module(gate)
    assert [gate.backoff_delay(n, 10, 300) for n in range(8)] == [0, 10, 20, 40, 80, 160, 300, 300]


def test_gate_refuses_unknown_arguments(tmp_path):
    result = _gate("leader", str(tmp_path), state=tmp_path)
    assert result.returncode == 2 and "usage:" in result.stderr


def test_leader_gate_marks_ready_after_warm_up_and_a_new_start_clears_it(tmp_path):
    """pd-announce announces only while `ready` exists (discovery zmq): the
    leader gate writes it after /health and the warm-up completion, the next
    start's backoff step removes it before the process runs."""
    class Instance(StandInWorker):
        body = b'{"choices":[{"text":"ok"}]}'

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Instance)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert _gate("backoff", str(tmp_path), "0", "0", state=tmp_path).returncode == 0
        assert not (tmp_path / "ready").exists()
        result = _gate("leader", str(tmp_path), f"{url}/health", url, "m", "0.1", "10", state=tmp_path)
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "ready").exists()
        assert (tmp_path / "failed-starts").read_text().strip() == "0"
        assert _gate("backoff", str(tmp_path), "0", "0", state=tmp_path).returncode == 0
        assert not (tmp_path / "ready").exists()
    finally:
        server.shutdown()
