"""Prometheus on a lab node from the plan: targets, rules, the unit, and
scaling that rewrites targets and rules without restarting Prometheus."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from nodes import address as node_address

ROOT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
INVENTORY = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent
CONVERGE = Path(__file__).resolve().parents[1] / "converge.yml"


def address(host) -> str:
    return node_address(host.backend.get_hostname())


def prometheus(host) -> str:
    return f"http://{address(host)}:9090"


def api(host, path: str) -> dict:
    with urllib.request.urlopen(prometheus(host) + path, timeout=10) as answer:
        return json.loads(answer.read())["data"]


def query(host, expr: str) -> list[dict]:
    return api(host, "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))["result"]


def targets(host) -> dict[tuple[str, str], dict]:
    active = api(host, "/api/v1/targets?state=active")["activeTargets"]
    return {(t["labels"]["job"], t["labels"]["instance"]): t for t in active}


def service_state(host) -> tuple[str, str]:
    out = host.check_output("systemctl show -p MainPID -p ActiveEnterTimestamp --value prometheus")
    pid, since = out.splitlines()
    return pid, since


def converge(tmp_path: Path, extra_vars: dict | None = None, extra_hosts: dict | None = None,
             options: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    cmd = ["ansible-playbook", str(CONVERGE), "-i", str(INVENTORY), *options]
    if extra_hosts:
        path = tmp_path / "extra-hosts.yml"
        path.write_text(yaml.safe_dump(extra_hosts))
        cmd += ["-i", str(path)]
    if extra_vars:
        path = tmp_path / "extra-vars.json"
        path.write_text(json.dumps(extra_vars))
        cmd += ["-e", f"@{path}"]
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "PY_COLORS": "0"}
    return subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT, env=env)


def eventually(check, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(1)


def recap_changed(output: str, host: str) -> int:
    line = next(x for x in output.splitlines() if x.startswith(host) and "changed=" in x)
    return int(line.split("changed=")[1].split()[0])


SCALED_OUT = {"all": {"children": {"prefill": {"hosts": {"mon-p1": {"pd_address": "10.88.254.11"}}}}}}


def test_prometheus_runs_the_roles_unit_bound_to_the_cluster_address(host):
    service = host.service("prometheus")
    assert service.is_running and service.is_enabled
    assert host.file("/etc/systemd/system/prometheus.service").contains(f"--web.listen-address={address(host)}:9090")
    sockets = [str(s) for s in host.socket.get_listening_sockets()]
    assert f"tcp://{address(host)}:9090" in sockets
    assert "tcp://0.0.0.0:9090" not in sockets and "tcp://:::9090" not in sockets
    assert host.process.get(comm="prometheus").user == "prometheus"


def test_every_planned_target_is_scraped_with_the_plans_labels(host):
    found = eventually(lambda: targets(host) if len(targets(host)) == 4 else None)
    assert set(found) == {("vllm-prefill", "prefill-0"), ("vllm-decode", "decode-0"),
                          ("vllm-router", "router-0"), ("prometheus", "mol-mon")}
    prefill = found[("vllm-prefill", "prefill-0")]
    assert prefill["scrapeUrl"] == "http://10.88.254.10:8100/metrics"
    assert {k: prefill["labels"][k] for k in ("pool", "kv_rank", "host", "gpus")} == {
        "pool": "prefill", "kv_rank": "0", "host": "mon-p0", "gpus": "1"}
    # Prometheus itself is up; the pools' addresses have no server here.
    assert found[("prometheus", "mol-mon")]["health"] == "up"


def test_rules_are_loaded_and_evaluate(host):
    groups = api(host, "/api/v1/rules")["groups"]
    assert {g["name"] for g in groups} == {"pd-plan", "pd-pool", "pd-nixl", "pd-router", "pd-capacity", "pd-health"}
    bad = [(g["name"], r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r["health"] == "err"]
    assert not bad
    gpus = eventually(lambda: query(host, "pool:pd_gpus:sum"))
    assert {r["metric"]["pool"]: r["value"][1] for r in gpus} == {"prefill": "1", "decode": "1"}
    # The pools are unreachable here: the instance-down alert is pending or firing.
    alerts = eventually(lambda: [a for a in api(host, "/api/v1/alerts")["alerts"]
                                 if a["labels"]["alertname"] == "PDInstanceDown"])
    assert {a["labels"]["instance"] for a in alerts} == {"prefill-0", "decode-0"}


def test_files_are_validated_and_not_world_writable(host):
    for path in ("/etc/prometheus/prometheus.yml", "/etc/prometheus/pd-rules/pd-alerts.yml",
                 "/etc/prometheus/file_sd/vllm-prefill.json"):
        f = host.file(path)
        assert f.user == "root" and f.group == "prometheus" and f.mode == 0o644, path
    assert host.run("promtool check config /etc/prometheus/prometheus.yml").rc == 0


def test_scaling_rewrites_targets_and_rules_without_a_restart(host, tmp_path):
    before = service_state(host)
    original = {p: host.file(p).content_string for p in ("/etc/prometheus/file_sd/vllm-prefill.json",
                                                          "/etc/prometheus/pd-rules/pd-plan.yml")}
    reloads = query(host, "prometheus_config_last_reload_success_timestamp_seconds")[0]["value"][1]
    result = converge(tmp_path, extra_hosts=SCALED_OUT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert service_state(host) == before, "Prometheus restarted for a scale-out"
    assert eventually(lambda: ("vllm-prefill", "prefill-1") in targets(host))
    assert targets(host)[("vllm-prefill", "prefill-1")]["scrapeUrl"] == "http://10.88.254.11:8100/metrics"
    # The plan's GPU count changed: the rules were reloaded (SIGHUP), not restarted.
    assert eventually(lambda: {r["metric"]["pool"]: r["value"][1] for r in query(host, "pool:pd_gpus:sum")}
                      .get("prefill") == "2")
    after_reload = query(host, "prometheus_config_last_reload_success_timestamp_seconds")[0]["value"][1]
    assert float(after_reload) > float(reloads)

    # And back: the target goes, still no restart, the files are as before
    # (idempotence of the unchanged inventory is molecule's own step).
    result = converge(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    assert service_state(host) == before
    assert eventually(lambda: ("vllm-prefill", "prefill-1") not in targets(host))
    assert {p: host.file(p).content_string for p in original} == original


def test_check_mode_reports_a_scale_out_and_changes_nothing(host, tmp_path):
    sd = host.file("/etc/prometheus/file_sd/vllm-prefill.json").content_string
    result = converge(tmp_path, extra_hosts=SCALED_OUT, options=("--check", "--diff"))
    assert result.returncode == 0, result.stdout[-3000:]
    assert "10.88.254.11:8100" in result.stdout      # the diff shows the new target
    assert recap_changed(result.stdout, "mol-mon") > 0
    assert host.file("/etc/prometheus/file_sd/vllm-prefill.json").content_string == sd


@pytest.mark.parametrize(("extra", "culprit"), [
    ({"pd_monitoring": {"grafana_enabled": False, "alert_for": "soon"}}, "pd_monitoring.alert_for"),
    ({"prometheus_extra_scrape_configs": [{"job_name": "broken", "scrape_interval": "soon"}]},
     "not a valid duration string"),
])
def test_bad_input_fails_and_prometheus_keeps_running(host, tmp_path, extra, culprit):
    before = service_state(host)
    config = host.file("/etc/prometheus/prometheus.yml").content_string
    result = converge(tmp_path, extra_vars=extra)
    assert result.returncode != 0
    assert culprit in result.stdout + result.stderr, result.stdout[-3000:] + result.stderr[-2000:]
    assert host.file("/etc/prometheus/prometheus.yml").content_string == config
    assert service_state(host) == before
    assert host.service("prometheus").is_running


def test_the_packages_sample_config_never_ran(host):
    """The packages start their services on install; masked before it, neither ran with its sample
    config: no series of the sample's jobs (node at localhost:9100, prometheus at localhost:9090)
    ever entered the TSDB, which keeps everything since the first start."""
    series = api(host, "/api/v1/series?" + urllib.parse.urlencode({"match[]": "up", "start": "0"}))
    assert series, "no up series at all"
    assert {s["job"] for s in series} <= {"vllm-prefill", "vllm-decode", "vllm-router", "prometheus", "dcgm"}, series
    assert not [s for s in series if s["instance"].startswith("localhost:")], series
    # The services run the role's units (no mask left), Alertmanager with the role's config.
    for unit in ("prometheus", "prometheus-alertmanager"):
        assert not host.file(f"/etc/systemd/system/{unit}.service").is_symlink, unit
        assert host.service(unit).is_running and host.service(unit).is_enabled, unit
    assert "--config.file=/etc/prometheus/pd-alertmanager.yml" in host.file(
        "/etc/systemd/system/prometheus-alertmanager.service").content_string
    assert host.process.get(comm="prometheus-aler").user == "prometheus"


def test_alertmanager_listens_on_loopback_only_and_its_config_is_not_world_readable(host):
    sockets = [str(s) for s in host.socket.get_listening_sockets()]
    assert "tcp://127.0.0.1:9093" in sockets
    assert not [s for s in sockets if s.endswith(":9093") and "127.0.0.1" not in s]
    assert not [s for s in sockets if s.endswith(":9094")], "cluster gossip port open"
    config = host.file("/etc/prometheus/pd-alertmanager.yml")
    assert (config.user, config.group, config.mode) == ("root", "prometheus", 0o640)
    assert host.run("amtool check-config /etc/prometheus/pd-alertmanager.yml").rc == 0


def _notifications(host) -> list[dict]:
    log = host.file("/var/log/pd-test-webhook.jsonl")
    return [json.loads(line) for line in log.content_string.splitlines()] if log.exists else []


def test_an_alert_reaches_the_webhook_receiver_within_a_minute(host):
    """The pools' targets are down from the start: PDInstanceDown fires (alert_down_for 10 s here) and
    Alertmanager posts it to the receiver hook. Measured from the first scrape that found the target
    down (the first `up` sample, 0) to the receiver's arrival time."""
    def fired():
        return sorted((n["received"], a["labels"]["instance"]) for n in _notifications(host)
                      for a in n["body"]["alerts"]
                      if a["labels"]["alertname"] == "PDInstanceDown" and a["status"] == "firing")
    found = eventually(fired, timeout=90)
    assert found, "no PDInstanceDown notification reached the receiver"
    assert {instance for _, instance in found} >= {"prefill-0", "decode-0"}
    notification = _notifications(host)[0]
    assert notification["path"] == "/pd-alerts" and notification["body"]["receiver"] == "pd-webhook"
    for instance in ("prefill-0", "decode-0"):
        received = min(t for t, i in found if i == instance)
        samples = query(host, f'up{{instance="{instance}"}}[1h]')[0]["values"]
        first_down = min(float(t) for t, v in samples if v == "0")
        latency = received - first_down
        print(f"PDInstanceDown {instance}: target down -> receiver in {latency:.1f} s")
        assert 0 < latency <= 60, (instance, latency)
