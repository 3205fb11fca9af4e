"""Scale-out by one tray leaves every other tray's files alone (issue 15).

render.yml writes each host's files as the deployment installs them. The gb200
sample, rendered as is and with one prefill tray appended, must give byte-for-
byte the same files on every tray that was already there: IMEX's node list
(the rack from pd_imex_domains, not the serving trays), units, env files and
plan records. Only the monitoring host learns of the new instance (the router is told by the
instance itself: discovery).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import BIN, ENV, ROOT

pytestmark = pytest.mark.playbook

NEW_TRAY = "gb200-tray-05"
CONTROL_HOST = "cpu-ctl-01"


def _render(inventory: Path, out: Path) -> None:
    result = subprocess.run(
        [str(BIN / "ansible-playbook"), str(ROOT / "playbooks" / "render.yml"), "-i", str(inventory),
         "-e", f"render_dir={out}"],
        capture_output=True, text=True, env=ENV, cwd=ROOT, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def renders(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("scale-out")
    before, after = base / "before", base / "after"
    shutil.copytree(ROOT / "inventories" / "gb200", before / "inventory")
    shutil.copytree(ROOT / "inventories" / "gb200", after / "inventory")
    hosts = after / "inventory" / "hosts.yml"
    text = hosts.read_text()
    last_prefill = "        gb200-tray-02:\n          pd_address: 10.20.0.12\n"
    assert last_prefill in text
    hosts.write_text(text.replace(
        last_prefill, last_prefill + f"        {NEW_TRAY}:\n          pd_address: 10.20.0.15\n"))
    _render(before / "inventory", before / "render")
    _render(after / "inventory", after / "render")
    return before / "render", after / "render"


def test_appending_a_prefill_tray_changes_no_file_on_any_other_tray(renders):
    before, after = renders
    trays = sorted(p.name for p in before.iterdir() if p.is_dir() and p.name != CONTROL_HOST)
    assert trays == ["gb200-tray-01", "gb200-tray-02", "gb200-tray-03", "gb200-tray-04"]
    for tray in trays:
        old, new = _files(before / tray), _files(after / tray)
        assert "etc/nvidia-imex/nodes_config.cfg" in old, tray
        changed = sorted(name for name in old.keys() | new.keys() if old.get(name) != new.get(name))
        assert changed == [], f"{tray}: {changed}"


def test_the_new_tray_joins_the_rack_imex_list_unchanged(renders):
    before, after = renders
    config = "etc/nvidia-imex/nodes_config.cfg"
    rack = (before / "gb200-tray-01" / config).read_text()
    assert rack.splitlines() == [f"10.20.0.{n}" for n in range(11, 29)]
    assert (after / NEW_TRAY / config).read_text() == rack
    assert (after / NEW_TRAY / "etc/systemd/system/vllm-prefill-2.service").is_file()


def test_only_the_monitoring_host_learns_of_the_new_instance(renders):
    before, after = renders
    old, new = _files(before / CONTROL_HOST), _files(after / CONTROL_HOST)
    changed = sorted(name for name in old.keys() | new.keys() if old.get(name) != new.get(name))
    # Prometheus scrapes the new instance and its dcgm-exporter and counts its
    # GPUs (decode's kv_rank label moves up by one). The router's unit does
    # not change: with discovery (the default) the instance announces itself.
    assert changed == [
        "etc/prometheus/file_sd/dcgm.json", "etc/prometheus/file_sd/vllm-decode.json",
        "etc/prometheus/file_sd/vllm-prefill.json", "etc/prometheus/pd-rules/pd-plan.yml",
    ]
    assert "--vllm-discovery-address" in new["etc/systemd/system/vllm-router.service"].decode()
