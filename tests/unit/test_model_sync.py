"""pd_model_sync: verify catches partial copies; sync is idempotent and repairs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

TOOL = ROOT / "roles" / "model_weights" / "files" / "pd_model_sync.py"


def _safetensors(path: Path, tensors: dict[str, int]) -> None:
    """A valid safetensors file with uint8 tensors of the given byte sizes."""
    header, offset = {}, 0
    for name, size in tensors.items():
        header[name] = {"dtype": "U8", "shape": [size], "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(range(256)) * (offset // 256) + bytes(offset % 256))


def _checkpoint(root: Path, shards: int = 2) -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text("{}")
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        _safetensors(root / name, {f"layer{i}.a": 1000, f"layer{i}.b": 3000})
        weight_map.update({f"layer{i}.a": name, f"layer{i}.b": name})
    (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    manifest = {p.name: {"size": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
                for p in sorted(root.iterdir())}
    (root / "SHA256SUMS.json").write_text(json.dumps(manifest))
    return root


def _run(*args: str) -> tuple[int, dict]:
    result = subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, check=False)
    return result.returncode, json.loads(result.stdout)


@pytest.fixture
def source(tmp_path) -> Path:
    return _checkpoint(tmp_path / "source")


def test_sync_copies_verifies_and_marks(source, tmp_path):
    dest = tmp_path / "shared" / "model"
    rc, out = _run("sync", str(dest), "--revision", "r1", "--from-dir", str(source), "--manifest", "SHA256SUMS.json")
    assert (rc, out["changed"], out["state"]) == (0, True, "synced")
    assert (dest / ".pd-verified").read_text().strip() == "r1"
    rc, out = _run("verify", str(dest), "--manifest", "SHA256SUMS.json")
    assert rc == 0 and out["revision"] == "r1" and len(out["shards"]) == 2


def test_second_sync_changes_nothing(source, tmp_path):
    dest = tmp_path / "model"
    _run("sync", str(dest), "--revision", "r1", "--from-dir", str(source))
    rc, out = _run("sync", str(dest), "--revision", "r1", "--from-dir", str(source))
    assert (rc, out["changed"], out["state"]) == (0, False, "verified")


def test_truncated_shard_is_detected_without_a_manifest(source, tmp_path):
    dest = tmp_path / "model"
    _run("sync", str(dest), "--revision", "r1", "--from-dir", str(source))
    shard = dest / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    rc, out = _run("verify", str(dest))
    assert rc == 1
    assert "model-00002-of-00002.safetensors is" in out["problem"] and "its header says" in out["problem"]


def test_corrupted_copy_is_repaired_by_the_next_sync(source, tmp_path):
    dest = tmp_path / "model"
    _run("sync", str(dest), "--revision", "r1", "--from-dir", str(source), "--manifest", "SHA256SUMS.json")
    (dest / "model-00001-of-00002.safetensors").write_bytes(b"\0" * 10)
    rc, out = _run("sync", str(dest), "--revision", "r1", "--from-dir", str(source), "--manifest", "SHA256SUMS.json")
    assert (rc, out["changed"]) == (0, True)
    assert "model-00001-of-00002.safetensors" in out["reason"]
    assert _run("verify", str(dest), "--manifest", "SHA256SUMS.json")[0] == 0


def test_missing_shard_named_by_the_index(source, tmp_path):
    (source / "model-00002-of-00002.safetensors").unlink()
    rc, out = _run("sync", str(tmp_path / "model"), "--from-dir", str(source))
    assert rc == 1 and out["problem"] == "model-00002-of-00002.safetensors is missing"
    assert not (tmp_path / "model" / ".pd-verified").exists()


def test_sha256_mismatch_is_never_marked(source, tmp_path):
    manifest = json.loads((source / "SHA256SUMS.json").read_text())
    manifest["config.json"]["sha256"] = "0" * 64
    (source / "SHA256SUMS.json").write_text(json.dumps(manifest))
    rc, out = _run("sync", str(tmp_path / "model"), "--from-dir", str(source), "--manifest", "SHA256SUMS.json")
    assert rc == 1 and "config.json does not match its sha256" in out["problem"]
    assert not (tmp_path / "model" / ".pd-verified").exists()


def test_a_new_revision_resyncs(source, tmp_path):
    dest = tmp_path / "model"
    _run("sync", str(dest), "--revision", "r1", "--from-dir", str(source))
    rc, out = _run("sync", str(dest), "--revision", "r2", "--from-dir", str(source))
    assert (rc, out["changed"]) == (0, True)
    assert (dest / ".pd-verified").read_text().strip() == "r2"


def test_verify_without_marker_fails(source):
    rc, out = _run("verify", str(source))
    assert rc == 1 and "never fully synced" in out["problem"]


# --- per-revision layout, interruption, resume, lock, progress -------------

MANIFEST = "SHA256SUMS.json"


def _sync(dest: Path, source: Path, revision: str = "r1", env: dict | None = None,
          *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), "sync", str(dest), "--revision", revision,
                           "--from-dir", str(source), "--manifest", MANIFEST, *extra],
                          capture_output=True, text=True, check=False, env={**os.environ, **(env or {})})


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".pd-")}


@pytest.fixture
def shared_copy(tmp_path) -> Path:
    """A verified copy on shared storage (marker and journal in it): the source of a stage copy."""
    source = _checkpoint(tmp_path / "origin")
    (source / "tokenizer.json").write_text('{"model": "tiny"}')
    shared = tmp_path / "shared" / "model"
    assert _sync(shared, source).returncode == 0
    assert (shared / ".pd-verified").is_file() and (shared / ".pd-sync-journal.json").is_file()
    return shared


def _interruption_points(source: Path) -> list[str]:
    names = sorted(str(p.relative_to(source)) for p in source.rglob("*")
                   if p.is_file() and not p.name.startswith(".pd-"))
    return ([f"{n}:{point}" for n in names for point in ("partial", "renamed", "journaled")]
            + [".pd-verified:before", ".pd-verified:written"])


def test_every_interruption_resumes_and_is_never_reported_verified(shared_copy, tmp_path):
    points = _interruption_points(shared_copy)
    assert len(points) == 6 * 3 + 2
    expected = _tree(shared_copy)
    for number, point in enumerate(points):
        stage = tmp_path / f"stage{number}" / "model"
        killed = _sync(stage, shared_copy, env={"PD_MODEL_SYNC_FAULT": point})
        assert killed.returncode == -9, (point, killed.stdout, killed.stderr)
        # The interrupted copy is not what the path shows, and nothing calls it verified.
        rc, out = _run("verify", str(stage), "--manifest", MANIFEST)
        assert rc == 1 and out["state"] == "invalid", (point, out)
        revdir = stage.parent / "model.revisions" / "r1"
        assert not (revdir / ".pd-verified").exists() or point == ".pd-verified:written", point
        # The next run completes it, copying only what the journal lacked, hashing nothing again.
        journaled = set(json.loads((revdir / ".pd-sync-journal.json").read_text())) \
            if (revdir / ".pd-sync-journal.json").exists() else set()
        resumed = _sync(stage, shared_copy)
        assert resumed.returncode == 0, (point, resumed.stdout)
        out = json.loads(resumed.stdout)
        assert set(out["copied"]) == set(expected) - journaled, point
        assert out["hashed_bytes"] == 0, point
        assert (stage / ".pd-verified").read_text() == "r1\n", point
        assert _tree(stage) == expected, point
        assert not list(revdir.rglob("*.partial")), point


def test_an_interrupted_new_revision_leaves_the_old_one_in_use(source, tmp_path):
    dest = tmp_path / "model"
    assert _sync(dest, source, "r1").returncode == 0
    old = _tree(dest)
    _safetensors(source / "model-00002-of-00002.safetensors", {"layer1.a": 1000, "layer1.b": 3001})
    _checkpoint_manifest(source)
    for point in _interruption_points(source):
        assert _sync(dest, source, "r2", {"PD_MODEL_SYNC_FAULT": point}).returncode == -9
        rc, out = _run("verify", str(dest), "--manifest", MANIFEST)
        assert (rc, out["revision"]) == (0, "r1"), point
        assert _tree(dest) == old, point
    # Killed after the marker, before the switch: the next run only switches.
    out = json.loads(_sync(dest, source, "r2").stdout)
    assert (out["changed"], out["state"], out["copied"], out["hashed_bytes"]) == (True, "verified", [], 0)
    assert os.readlink(dest) == "model.revisions/r2"
    assert _tree(dest) == _tree(source)
    # Switching back to a revision still on disk copies nothing.
    out = json.loads(_sync(dest, source, "r1").stdout)
    assert (out["changed"], out["state"], out["copied"]) == (True, "verified", [])
    assert _tree(dest) == old


def _checkpoint_manifest(root: Path) -> None:
    manifest = {p.name: {"size": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
                for p in sorted(root.iterdir()) if p.name != MANIFEST}
    (root / MANIFEST).write_text(json.dumps(manifest))


def test_the_source_marker_is_never_copied(shared_copy, tmp_path):
    stage = tmp_path / "stage"
    # Killed right after the last file: everything is there but the marker.
    last = _interruption_points(shared_copy)[-3]
    assert _sync(stage, shared_copy, env={"PD_MODEL_SYNC_FAULT": last}).returncode == -9
    assert not (stage.parent / "stage.revisions" / "r1" / ".pd-verified").exists()


def test_a_plain_directory_from_the_old_layout_is_adopted_without_copying(source, tmp_path):
    dest = tmp_path / "model"
    shutil.copytree(source, dest)
    (dest / ".pd-verified").write_text("r1\n")
    out = json.loads(_sync(dest, source, "r1").stdout)
    assert (out["changed"], out["state"], out["copied"]) == (True, "verified", [])
    assert dest.is_symlink() and _tree(dest) == _tree(source)


def _wait_for(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def _status(path: Path) -> dict:
    result = subprocess.run([sys.executable, str(TOOL), "status", str(path)], capture_output=True, text=True,
                            check=True)
    return json.loads(result.stdout)


def test_a_second_sync_is_refused_naming_the_holder_and_then_runs(source, tmp_path):
    dest, status = tmp_path / "model", tmp_path / "status.json"
    # The first sync stops (SIGSTOP) halfway through a shard, holding the lock.
    first = subprocess.Popen([sys.executable, str(TOOL), "sync", str(dest), "--revision", "r1", "--from-dir",
                              str(source), "--status-file", str(status)],
                             env={**os.environ, "PD_MODEL_SYNC_STATUS_EVERY": "0",
                                  "PD_MODEL_SYNC_FAULT": "stop@model-00001-of-00002.safetensors:partial"},
                             stdout=subprocess.PIPE, text=True)
    try:
        progress = _wait_for(lambda: (s := _status(status)).get("current") and s)
        assert progress["phase"] == "copying"
        assert progress["current"] == "model-00001-of-00002.safetensors"
        assert 0 < progress["bytes_done"] < progress["bytes_total"] == sum(
            p.stat().st_size for p in source.iterdir())
        second = _sync(dest, source, "r1", None, "--lock-timeout", "1")
        out = json.loads(second.stdout)
        assert second.returncode == 1
        assert f"is locked by pid {first.pid} on " in out["problem"]
        assert "(pd-model-sync sync, revision r1) since 20" in out["problem"]
        assert "waited 1 s" in out["problem"]
    finally:
        first.kill()
        first.wait()
    # The kernel released the dead holder's lock: the next sync just runs.
    assert _sync(dest, source, "r1", None, "--lock-timeout", "1").returncode == 0


def test_detached_sync_reports_progress_and_its_result(source, tmp_path):
    dest, status = tmp_path / "model", tmp_path / "status.json"
    started = _sync(dest, source, "r1", None, "--status-file", str(status), "--detach")
    assert json.loads(started.stdout)["state"] == "started"
    final = _wait_for(lambda: (s := _status(status)).get("result") and s)
    assert final["phase"] == "done" and final["result"]["state"] == "synced"
    assert _run("verify", str(dest), "--manifest", MANIFEST)[0] == 0


def test_a_detached_sync_that_dies_is_reported_dead(source, tmp_path):
    dest, status = tmp_path / "model", tmp_path / "status.json"
    started = _sync(dest, source, "r1", {"PD_MODEL_SYNC_FAULT": "config.json:renamed"},
                    "--status-file", str(status), "--detach")
    assert started.returncode == 0
    dead = _wait_for(lambda: (s := _status(status))["phase"] == "died" and s)
    assert "ended without a result" in dead["problem"] and "rerun to resume" in dead["problem"]
