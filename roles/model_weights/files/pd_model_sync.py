#!/usr/bin/env python3
"""Put a checkpoint on shared storage once, verified; repair a bad copy.

    pd_model_sync.py verify DEST [--manifest NAME]
    pd_model_sync.py sync DEST --revision REV (--from-dir DIR | --repo-id ID [--hf-cli PATH])
                     [--manifest NAME]

`sync` holds an exclusive lock (DEST.lock) so concurrent runs cannot corrupt
the copy, skips the work when DEST carries a marker for REV and still passes
the quick check, and otherwise copies (resuming: files already complete are
kept) or downloads with the `hf` CLI (which resumes), verifies, and writes the
marker last. A partial or corrupted copy fails verification and is redone,
never marked. Prints one JSON line; "changed" tells whether files moved.

Verification, stdlib only:
- every shard named by model.safetensors.index.json exists (else the single
  model.safetensors);
- every *.safetensors file is exactly as long as its own header says
  (8-byte length + JSON header + the end of its last tensor): truncation is
  caught without a manifest;
- with a manifest (JSON {file: {size, sha256}}), every listed file has that
  size and, on sync, that sha256.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

MARKER = ".pd-verified"


class Invalid(Exception):
    pass


def _safetensors_length(path: Path) -> int:
    with path.open("rb") as handle:
        raw = handle.read(8)
        if len(raw) != 8:
            raise Invalid(f"{path.name}: shorter than a safetensors header")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > 100_000_000:
            raise Invalid(f"{path.name}: implausible header length {header_len}")
        try:
            header = json.loads(handle.read(header_len))
        except ValueError as exc:
            raise Invalid(f"{path.name}: unreadable header ({exc})") from exc
    ends = [t["data_offsets"][1] for name, t in header.items() if name != "__metadata__"]
    return 8 + header_len + max(ends, default=0)


def verify(dest: Path, manifest_name: str | None, full: bool) -> list[str]:
    """Return the verified file names; raise Invalid naming the first problem."""
    if not dest.is_dir():
        raise Invalid(f"{dest} does not exist")
    index = dest / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        shards = ["model.safetensors"]
    for name in ("config.json", *shards):
        if not (dest / name).is_file():
            raise Invalid(f"{name} is missing")
    for shard in shards:
        actual, expected = (dest / shard).stat().st_size, _safetensors_length(dest / shard)
        if actual != expected:
            raise Invalid(f"{shard} is {actual} bytes, its header says {expected}")
    if manifest_name:
        manifest_path = dest / manifest_name
        if not manifest_path.is_file():
            raise Invalid(f"manifest {manifest_name} is missing")
        manifest = json.loads(manifest_path.read_text())
        for name, entry in sorted(manifest.items()):
            path = dest / name
            if not path.is_file():
                raise Invalid(f"{name} (in the manifest) is missing")
            if path.stat().st_size != entry["size"]:
                raise Invalid(f"{name} is {path.stat().st_size} bytes, the manifest says {entry['size']}")
            if full and _sha256(path) != entry["sha256"]:
                raise Invalid(f"{name} does not match its sha256 in the manifest")
    return shards


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _copy_tree(source: Path, dest: Path) -> int:
    """Copy files whose size differs (resumable); return how many were copied."""
    copied = 0
    for path in sorted(source.rglob("*")):
        if not path.is_file():
            continue
        target = dest / path.relative_to(source)
        if target.is_file() and target.stat().st_size == path.stat().st_size and _sha256(target) == _sha256(path):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        shutil.copyfile(path, partial)
        os.replace(partial, target)
        copied += 1
    return copied


def _download(repo_id: str, revision: str, dest: Path, hf_cli: str) -> None:
    # The token comes from HF_TOKEN in the environment, never the command line.
    subprocess.run([hf_cli, "download", repo_id, "--revision", revision, "--local-dir", str(dest)],
                   check=True, stdout=subprocess.DEVNULL)


def sync(opts) -> dict:
    dest = Path(opts.dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{dest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = dest / MARKER
        if marker.is_file() and marker.read_text().strip() == opts.revision:
            try:
                verify(dest, opts.manifest, full=False)
                return {"changed": False, "revision": opts.revision, "state": "verified"}
            except Invalid as exc:
                problem = str(exc)
                marker.unlink()
        else:
            problem = "no marker for this revision"
        dest.mkdir(parents=True, exist_ok=True)
        if opts.from_dir:
            _copy_tree(Path(opts.from_dir), dest)
        else:
            _download(opts.repo_id, opts.revision, dest, opts.hf_cli)
        verify(dest, opts.manifest, full=True)
        tmp = marker.with_name(MARKER + ".tmp")
        tmp.write_text(opts.revision + "\n")
        os.replace(tmp, marker)
        return {"changed": True, "revision": opts.revision, "state": "synced", "reason": problem}


def main(argv: list[str]) -> int:
    cli = argparse.ArgumentParser(description="sync and verify a checkpoint")
    cli.add_argument("command", choices=("sync", "verify"))
    cli.add_argument("dest")
    cli.add_argument("--revision", default="local")
    cli.add_argument("--from-dir")
    cli.add_argument("--repo-id")
    cli.add_argument("--hf-cli", default="hf")
    cli.add_argument("--manifest")
    opts = cli.parse_args(argv)
    try:
        if opts.command == "verify":
            dest = Path(opts.dest)
            shards = verify(dest, opts.manifest, full=False)
            marker = dest / MARKER
            if not marker.is_file():
                raise Invalid(f"{dest} carries no {MARKER} marker: it was never fully synced")
            result = {"changed": False, "state": "verified", "revision": marker.read_text().strip(),
                      "shards": shards}
        else:
            if not opts.from_dir and not opts.repo_id:
                cli.error("sync needs --from-dir or --repo-id")
            result = sync(opts)
    except Invalid as exc:
        print(json.dumps({"changed": False, "state": "invalid", "problem": str(exc)}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
