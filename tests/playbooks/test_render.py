"""render.yml end to end: the real ansible-playbook, inventories as users write them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import BIN, ENV, ROOT
from specs import systemd_split

pytestmark = pytest.mark.playbook


def render(inventory: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ansible-playbook"), str(ROOT / "playbooks" / "render.yml"), "-i", str(inventory),
         "-e", f"render_dir={out}", *extra],
        capture_output=True, text=True, env=ENV, cwd=ROOT, check=False,
    )


@pytest.fixture(scope="module")
def gb200_render(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("gb200") / "render"
    result = render(ROOT / "inventories" / "gb200", out)
    assert result.returncode == 0, result.stdout + result.stderr
    return out, result


def test_render_gb200_writes_plan_and_prints_table(gb200_render):
    out, result = gb200_render
    plan = json.loads((out / "plan.json").read_text())
    for key in ("vllm_version", "connector", "instances", "router"):
        assert key in plan
    assert plan["vllm_version"] == "0.34.0" and plan["connector"] == "NixlConnector"
    instance = plan["instances"][0]
    for key in ("name", "role", "kv_rank", "kv_parallel_size", "url", "nodes"):
        assert key in instance
    for key in ("host", "gpus", "leader", "model", "serve_args", "env"):
        assert key in instance["nodes"][0]
    assert isinstance(plan["router"]["args"], list)
    # The full table, one line per node, is in render_dir/plan.txt; the run prints a per-pool summary.
    table = (out / "plan.txt").read_text()
    assert "POOL     INSTANCES" in result.stdout
    assert "prefill-1  prefill  1/3      gb200-tray-02" in table
    assert "headless, dp start rank 4" in table


def _exec_argv(unit_text: str) -> list[str]:
    lines = unit_text[unit_text.index("ExecStart=") + len("ExecStart="):].splitlines()
    value = []
    for line in lines:
        value.append(line)
        if not line.endswith("\\"):
            break
    return systemd_split("\n".join(value))


def test_render_gb200_writes_every_hosts_units_from_the_plan(gb200_render):
    out, _ = gb200_render
    plan = json.loads((out / "plan.json").read_text())
    for instance in plan["instances"]:
        for node in instance["nodes"]:
            root = out / node["host"]
            unit = (root / "etc/systemd/system" / f"{instance['unit']}.service").read_text()
            # ExecStart is exactly vllm serve MODEL + the plan's argument list.
            assert _exec_argv(unit) == ["/opt/vllm/0.34.0/bin/vllm", "serve", node["model"], *node["serve_args"]]
            assert "After=network-online.target nvidia-imex.service" in unit
            assert "LimitMEMLOCK=infinity" in unit and "User=vllm" in unit
            env = (root / "etc/vllm" / f"{instance['unit']}.env").read_text()
            for key, value in node["env"].items():
                assert f"{key}={value}" in env
    # The follower of the 8-GPU decode instance is headless; no stray units.
    assert "--headless" in (out / "gb200-tray-04/etc/systemd/system/vllm-decode-0.service").read_text()
    # The leader's announcer (router discovery, the default); the follower has none.
    assert sorted(p.name for p in (out / "gb200-tray-01/etc/systemd/system").iterdir()) == [
        "dcgm-exporter.service", "vllm-prefill-0-announce.service", "vllm-prefill-0.service"]
    assert not (out / "gb200-tray-04/etc/systemd/system/vllm-decode-0-announce.service").exists()
    router = (out / "cpu-ctl-01/etc/systemd/system/vllm-router.service").read_text()
    assert _exec_argv(router)[1:-2] == plan["router"]["args"]
    assert not (out / "cpu-ctl-01/etc/vllm-router").exists(), "the router env file may hold a key: never rendered"


def test_render_gb200_shows_the_monitoring_the_cluster_gets(gb200_render, promtool):
    """The full scrape config (every job from file_sd, DCGM on every tray),
    the rules and the dashboards, all accepted by promtool."""
    out, _ = gb200_render
    plan = json.loads((out / "plan.json").read_text())
    etc = out / "cpu-ctl-01/etc/prometheus"
    config = yaml.safe_load((etc / "prometheus.yml").read_text())
    assert [j["job_name"] for j in config["scrape_configs"]] == [
        "vllm-prefill", "vllm-decode", "vllm-router", "dcgm", "prometheus"]
    dcgm = json.loads((etc / "file_sd/dcgm.json").read_text())
    assert [e["targets"][0] for e in dcgm] == [f"10.20.0.{n}:9400" for n in (11, 12, 13, 14)]
    decode = json.loads((etc / "file_sd/vllm-decode.json").read_text())
    assert decode[0]["labels"] == {"pool": "decode", "instance": "decode-0", "kv_rank": "2",
                                   "host": "gb200-tray-03", "gpus": "8"}
    assert sorted(p.name for p in (etc / "pd-rules").iterdir()) == ["pd-alerts.yml", "pd-plan.yml", "pd-recording.yml"]
    for path in (etc / "pd-rules").iterdir():
        check = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
    # The config points at /etc: check a copy whose paths point into the render.
    text = (etc / "prometheus.yml").read_text().replace("/etc/prometheus/", f"{etc}/")
    (out / "prometheus-rendered.yml").write_text(text)
    check = subprocess.run([promtool, "check", "config", str(out / "prometheus-rendered.yml")],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0 and "WARNING" not in check.stdout + check.stderr, check.stdout + check.stderr
    unit = (out / "cpu-ctl-01/etc/systemd/system/prometheus.service").read_text()
    assert "--web.listen-address=10.20.0.5:9090" in unit
    # Grafana (enabled in the sample): datasource on the plan's Prometheus, the three dashboards.
    datasource = json.loads((out / "cpu-ctl-01/etc/grafana/provisioning/datasources/vllm-pd.yaml").read_text())
    assert datasource["datasources"][0]["url"] == "http://10.20.0.5:9090"
    boards = out / "cpu-ctl-01/var/lib/grafana/dashboards/vllm-pd"
    assert sorted(p.name for p in boards.iterdir()) == ["pd-gpus.json", "pd-instance.json", "pd-overview.json"]
    assert json.loads((boards / "pd-overview.json").read_text())["uid"] == "pd-overview"
    assert not list(out.glob("*/etc/grafana/pd-secrets.env")), "the admin password is never rendered"
    assert plan["scrape"]["pool_gpus"] == {"prefill": 8, "decode": 8}


def test_render_gb200_shows_the_imex_domain_and_dcgm_on_every_tray(gb200_render):
    out, _ = gb200_render
    trays = [f"gb200-tray-0{n}" for n in (1, 2, 3, 4)]
    lists = {t: (out / t / "etc/nvidia-imex/nodes_config.cfg").read_text() for t in trays}
    # Every tray of the rack (pd_imex_domains), not only the four serving.
    assert set(lists.values()) == {"".join(f"10.20.0.{n}\n" for n in range(11, 29))}
    for n, tray in zip((11, 12, 13, 14), trays, strict=True):
        root = out / tray
        assert (root / "etc/modprobe.d/nvidia-vllm-pd.conf").read_text().endswith(
            "options nvidia NVreg_CreateImexChannel0=1\n")
        platform = json.loads((root / "etc/vllm-pd/nvidia-platform.json").read_text())
        assert platform["cuda_repo_path"] == "ubuntu2404/sbsa/"
        assert platform["packages"]["fabric_manager"] == [], "no host fabric manager on NVL72 trays"
        unit = (root / "etc/systemd/system/dcgm-exporter.service").read_text()
        assert _exec_argv(unit)[1:3] == ["--address", f"10.20.0.{n}:9400"]
    # The vLLM units start after IMEX; the CPU host gets no NVIDIA files.
    assert "After=network-online.target nvidia-imex.service" in (
        out / "gb200-tray-01/etc/systemd/system/vllm-prefill-0.service").read_text()
    assert not (out / "cpu-ctl-01/etc/vllm-pd").exists()


GB200_TRAY_FILES = {
    "etc/dcgm-exporter/vllm-pd-counters.csv": 0o644,
    "etc/modprobe.d/blacklist-nouveau.conf": 0o644,
    "etc/modprobe.d/nvidia-vllm-pd.conf": 0o644,
    "etc/nvidia-imex/nodes_config.cfg": 0o644,
    "etc/systemd/system/dcgm-exporter.service": 0o644,
    "etc/vllm-pd/nvidia-platform.json": 0o644,
}


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mode & 0o7777 for p in root.rglob("*") if p.is_file()}


def test_render_writes_exactly_the_files_each_host_gets_with_their_modes(gb200_render):
    """The roles' files.yml (the task file site.yml runs with root /) under
    render_dir/<host>: every file a host gets, nothing else, with the mode it
    has on the host (env files 0640: root:vllm on the host)."""
    out, _ = gb200_render
    plan = json.loads((out / "plan.json").read_text())
    for host in ("gb200-tray-01", "gb200-tray-02", "gb200-tray-03", "gb200-tray-04"):
        units = sorted({i["unit"] for i in plan["instances"] for n in i["nodes"] if n["host"] == host})
        expected = dict(GB200_TRAY_FILES)
        for unit in units:
            expected[f"etc/vllm/{unit}.env"] = 0o640
            expected[f"etc/vllm/{unit}.json"] = 0o644  # the plan record retire.yml reads
            expected[f"etc/systemd/system/{unit}.service"] = 0o644
        # Each leader's announcer (router discovery, the default).
        for instance in plan["instances"]:
            if instance["nodes"][0]["host"] == host and "announce" in instance:
                expected[f"etc/systemd/system/{instance['announce']['unit']}.service"] = 0o644
        assert _files(out / host) == expected, host
    ctl = _files(out / "cpu-ctl-01")
    assert {f: m for f, m in ctl.items() if not f.startswith("var/lib/grafana/dashboards/")} == {
        "etc/systemd/system/vllm-router.service": 0o644,
        "etc/systemd/system/prometheus.service": 0o644,
        "etc/prometheus/prometheus.yml": 0o644,
        "etc/systemd/system/prometheus-alertmanager.service": 0o644,
        "etc/prometheus/pd-alertmanager.yml": 0o640,  # may hold the receiver's token
        **{f"etc/prometheus/file_sd/{job}.json": 0o644
           for job in ("vllm-prefill", "vllm-decode", "vllm-router", "dcgm", "prometheus")},
        **{f"etc/prometheus/pd-rules/{name}": 0o644 for name in ("pd-alerts.yml", "pd-plan.yml", "pd-recording.yml")},
        "etc/grafana/provisioning/datasources/vllm-pd.yaml": 0o644,
        "etc/grafana/provisioning/dashboards/vllm-pd.yaml": 0o644,
    }


def test_render_writes_each_roles_files_in_one_action(gb200_render):
    """Bulk rendering: one pd_files task for every host of a role (side by side, one action per
    host), never a module run per file nor an include per host."""
    _, result = gb200_render
    tasks = result.stdout.split("TASKS RECAP")[0]
    assert tasks.count("TASK [vllm_worker : Write the env files and units under") == 1
    assert tasks.count("TASK [vllm_worker : ") == 1
    worker_task = tasks.split("TASK [vllm_worker : Write the env files and units under")[1].split("TASK [")[0]
    plan = json.loads((gb200_render[0] / "plan.json").read_text())
    assert sorted(re.findall(r"^(?:changed|ok): \[([^\]]+)\]", worker_task, re.M)) == sorted(
        host for host, facts in plan["hosts"].items() if facts["units"])
    # Rendering installs nothing on the controller (the unit validator is the hosts').
    assert "TASK [pd_systemd" not in tasks
    for per_file in ("Render the env files", "Render the units", "Write the dashboards"):
        assert f"TASK [{per_file}" not in tasks


def test_render_records_each_instance_for_retire(gb200_render):
    """retire.yml reads where a dropped instance served from this record, not from the unit's text."""
    out, _ = gb200_render
    record = json.loads((out / "gb200-tray-03/etc/vllm/vllm-decode-0.json").read_text())
    assert record == {"instance": "decode-0", "unit": "vllm-decode-0", "pool": "decode",
                      "url": "http://10.20.0.13:8200"}


def test_render_is_idempotent(gb200_render):
    out, _ = gb200_render
    second = render(ROOT / "inventories" / "gb200", out)
    assert second.returncode == 0
    assert "changed=0" in second.stdout


def test_render_hosts_writes_those_hosts_files_and_the_whole_plan(tmp_path):
    out = tmp_path / "render"
    result = render(ROOT / "inventories" / "lab", out, "-e", "render_hosts=lab-decode-0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["lab-decode-0", "plan.json", "plan.txt"]
    assert (out / "lab-decode-0/etc/systemd/system/vllm-decode-0.service").exists()
    plan = json.loads((out / "plan.json").read_text())
    assert sorted(plan["hosts"]) == ["lab-ctl", "lab-decode-0", "lab-prefill-0"]
    # Empty: the plan alone.
    alone = tmp_path / "plan-only"
    assert render(ROOT / "inventories" / "lab", alone, "-e", "render_hosts=").returncode == 0
    assert sorted(p.name for p in alone.iterdir()) == ["plan.json", "plan.txt"]


def test_render_hosts_outside_the_plan_fail_naming_them_and_write_nothing(tmp_path):
    out = tmp_path / "render"
    result = render(ROOT / "inventories" / "lab", out, "-e", "render_hosts=lab-decode-0,lab-decode-9")
    assert result.returncode != 0
    assert "render_hosts: lab-decode-9 not in the plan; its hosts are lab-ctl, lab-decode-0, lab-prefill-0" in (
        result.stdout), result.stdout[-2000:]
    assert not out.exists()


def _broken_inventory(tmp_path: Path, relative: str, edit) -> Path:
    inventory = tmp_path / "inventory"
    shutil.copytree(ROOT / "inventories" / "gb200", inventory)
    path = inventory / relative
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data))
    return inventory


BROKEN = {
    "parallelism": ("group_vars/prefill.yml", lambda d: d["pd_pool"].update(data_parallel_size=2),
                    "data_parallel_size 2 = 2 GPUs, but gpus_per_instance is 4"),
    "legacy connector": ("group_vars/all/vllm.yml", lambda d: d.update(pd_kv_connector="P2pNcclConnector"),
                         "P2pNcclConnector is not accepted by vLLM 0.34.0"),
    "address outside network": ("hosts.yml",
                                lambda d: d["all"]["children"]["decode"]["hosts"]["gb200-tray-04"].update(
                                    pd_address="172.31.9.9"),
                                "host gb200-tray-04: pd_address 172.31.9.9 is not a host address inside"),
    "host in both pools": ("hosts.yml",
                           lambda d: d["all"]["children"]["decode"]["hosts"].update({"gb200-tray-01": None}),
                           "host gb200-tray-01 is in both groups prefill and decode"),
    "typo in pool option": ("group_vars/decode.yml", lambda d: d["pd_pool"].update(enable_dob=True),
                            "pd_pool (decode) has unknown option(s) enable_dob"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_render_bad_inventory_fails_naming_the_culprit_and_writes_nothing(tmp_path, case):
    relative, edit, message = BROKEN[case]
    out = tmp_path / "render"
    result = render(_broken_inventory(tmp_path, relative, edit), out)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert not out.exists()


def test_render_requires_render_dir():
    result = subprocess.run([str(BIN / "ansible-playbook"), str(ROOT / "playbooks" / "render.yml"),
                             "-i", str(ROOT / "inventories" / "gb200")],
                            capture_output=True, text=True, env=ENV, cwd=ROOT, check=False)
    assert result.returncode != 0
    assert "-e render_dir=DIR" in result.stdout


def _plan_stage(inventory: Path, *extra: str) -> subprocess.CompletedProcess:
    # plan.yml contacts no host (no facts, controller-only tasks), so it is
    # safe to run against the gb200 sample's addresses.
    return subprocess.run([str(BIN / "ansible-playbook"), str(ROOT / "playbooks" / "plan.yml"),
                           "-i", str(inventory), *extra],
                          capture_output=True, text=True, env=ENV, cwd=ROOT, check=False)


def test_plan_stage_under_limit_still_plans_the_whole_cluster():
    result = _plan_stage(ROOT / "inventories" / "gb200", "--limit", "gb200-tray-04")
    assert result.returncode == 0, result.stdout + result.stderr
    # The per-pool summary covers both prefill trays although only tray 04 is in the run.
    assert re.search(r"^\s*prefill\s+2\s+2\s+8\s", result.stdout, re.M), result.stdout
    assert "gb200-tray-04              : ok=" in result.stdout
    assert "gb200-tray-01" not in result.stdout.split("PLAY RECAP")[1]


def test_plan_stage_fails_on_bad_inventory_before_any_host_task(tmp_path):
    relative, edit, message = BROKEN["legacy connector"]
    result = _plan_stage(_broken_inventory(tmp_path, relative, edit))
    assert result.returncode != 0
    assert message in result.stdout
    assert "unreachable=0" in result.stdout


def test_plan_and_render_playbooks_never_connect_to_a_host():
    """Tests run these against the gb200 sample, whose addresses are never contacted."""
    for name in ("plan.yml", "render.yml"):
        for play in yaml.safe_load((ROOT / "playbooks" / name).read_text()):
            assert play.get("gather_facts") is False, name
            roles = [r["role"] if isinstance(r, dict) else r for r in play.get("roles", [])]
            assert set(roles) <= {"pd_plan"}, name
            if name == "render.yml":
                # The plan on localhost, then the files of the rendered hosts, written on the controller.
                assert play["hosts"] in ("localhost", "pd_render") and play["connection"] == "local"
