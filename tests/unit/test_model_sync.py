"""pd_model_sync: verify catches partial copies; sync is idempotent and repairs."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
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
