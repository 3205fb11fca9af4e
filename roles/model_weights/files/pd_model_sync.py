#!/usr/bin/env python3
"""Put a checkpoint on shared storage once, verified; repair a bad copy.

    pd-model-sync verify DEST [--manifest NAME]
    pd-model-sync sync DEST --revision REV (--from-dir DIR | --repo-id ID [--hf-cli PATH])
                  [--manifest NAME] [--lock-timeout S] [--status-file F [--detach]]
    pd-model-sync status STATUS_FILE

Layout: each revision has its own directory, DEST.revisions/<REV>/, and DEST
itself is a symlink to the verified one. A new revision is written beside the
one the workers use; the symlink is switched (rename over it, atomic) only
after the new directory is verified and marked. A partial copy is therefore
never what DEST points to.

`sync` holds an exclusive lock (DEST.lock, which records who holds it) and
waits at most --lock-timeout seconds for it, then fails naming the holder. It
skips the work when the revision directory carries a marker for REV and still
passes the quick check; otherwise it copies or downloads into it. Copies go
to NAME.partial, are hashed while copied, fsynced, renamed into place and
recorded in the directory's journal (.pd-sync-journal.json: size, mtime and
sha256 per file), so an interrupted sync resumes without copying or hashing
again what the journal covers. Files named .pd-* in the source (its marker,
its journal) are never copied. The marker .pd-verified is written last,
after full verification, then DEST is switched. Prints one JSON line;
"changed" tells whether files moved or DEST was switched.

With --status-file the progress (bytes done of total, phase, current file)
is written there every few seconds; with --detach the command returns once
the lock is held and the work runs on in the background, its result written
to the status file, which `status` reads (and reports a dead worker).

Verification, stdlib only:
- every shard named by model.safetensors.index.json exists (else the single
  model.safetensors);
- every *.safetensors file is exactly as long as its own header says
  (8-byte length + JSON header + the end of its last tensor): truncation is
  caught without a manifest;
- with a manifest (JSON {file: {size, sha256}}), every listed file has that
  size and, on sync, that sha256 (taken from the journal where the file is
  unchanged since it was hashed).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

MARKER = ".pd-verified"
JOURNAL = ".pd-sync-journal.json"
# Seconds between status file writes (the role polls it; tests set 0).
STATUS_EVERY = float(os.environ.get("PD_MODEL_SYNC_STATUS_EVERY", "5"))
# Fault injection for the interruption tests: "NAME:POINT" makes the process
# kill itself (SIGKILL) or stop (SIGSTOP, with "stop@") at that point.
FAULT = os.environ.get("PD_MODEL_SYNC_FAULT", "")


class Invalid(Exception):
    pass


def _fault(name: str, point: str) -> None:
    if not FAULT:
        return
    sig, _, where = FAULT.rpartition("@")
    if where == f"{name}:{point}":
        os.kill(os.getpid(), signal.SIGSTOP if sig == "stop" else signal.SIGKILL)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class Status:
    """Progress written to the status file, at most every STATUS_EVERY s."""

    def __init__(self, path: str | None):
        self.path = Path(path) if path else None
        self.data = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now(),
                     "phase": "starting", "bytes_done": 0, "bytes_total": None, "current": None}
        self._last = 0.0
        self._mutex = threading.Lock()

    def update(self, force: bool = False, **values) -> None:
        with self._mutex:
            self.data.update(values)
            if self.path and (force or time.monotonic() - self._last >= STATUS_EVERY):
                self._last = time.monotonic()
                _write_atomic(self.path, json.dumps({**self.data, "updated": _now()}))

    def add(self, done: int) -> None:
        self.update(bytes_done=self.data["bytes_done"] + done)


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


class Journal:
    """What this revision directory holds, hashed: {name: {size, mtime_ns, sha256}}."""

    def __init__(self, directory: Path):
        self.path = directory / JOURNAL
        try:
            self.entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}

    def sha256(self, directory: Path, name: str) -> str | None:
        """The recorded hash if the file is unchanged since it was recorded."""
        entry, path = self.entries.get(name), directory / name
        if not entry or not path.is_file():
            return None
        st = path.stat()
        return entry["sha256"] if (st.st_size, st.st_mtime_ns) == (entry["size"], entry["mtime_ns"]) else None

    def record(self, directory: Path, name: str, sha: str, source: Path | None = None) -> None:
        st = (directory / name).stat()
        self.entries[name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}
        if source:
            src = source.stat()
            self.entries[name]["source"] = [src.st_size, src.st_mtime_ns]
        _write_atomic(self.path, json.dumps(self.entries, sort_keys=True))


def _sha256(path: Path, status: Status | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
            if status:
                status.add(len(block))
    return digest.hexdigest()


def verify(dest: Path, manifest_name: str | None, full: bool, journal: Journal | None = None,
           status: Status | None = None) -> tuple[list[str], int]:
    """Return (shard names, bytes hashed); raise Invalid naming the first problem."""
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
    hashed = 0
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
            if not full:
                continue
            sha = journal.sha256(dest, name) if journal else None
            if sha is None:
                if status:
                    status.update(current=name)
                sha = _sha256(path, status)
                hashed += path.stat().st_size
                if journal:
                    journal.record(dest, name, sha)
            if sha != entry["sha256"]:
                raise Invalid(f"{name} does not match its sha256 in the manifest")
    return shards, hashed


def _source_files(source: Path) -> list[Path]:
    """Files to copy: the source's own .pd-* bookkeeping never travels."""
    return [p for p in sorted(source.rglob("*"))
            if p.is_file() and not any(part.startswith(".pd-") for part in p.relative_to(source).parts)]


def _copy_tree(source: Path, dest: Path, journal: Journal, status: Status) -> list[str]:
    """Copy what the journal does not already hold; return the names copied."""
    files = _source_files(source)
    status.update(force=True, phase="copying", bytes_total=sum(p.stat().st_size for p in files),
                  files_total=len(files), files_done=0)
    copied = []
    for number, path in enumerate(files, 1):
        name = str(path.relative_to(source))
        size = path.stat().st_size
        target = dest / name
        src = path.stat()
        if (journal.sha256(dest, name) is not None
                and journal.entries[name].get("source") == [src.st_size, src.st_mtime_ns]):
            status.add(size)
            status.update(files_done=number)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        status.update(current=name)
        digest = hashlib.sha256()
        with path.open("rb") as src, partial.open("wb") as out:
            while block := src.read(1 << 22):
                digest.update(block)
                out.write(block)
                status.add(len(block))
                if out.tell() >= size // 2:
                    _fault(name, "partial")
            out.flush()
            os.fsync(out.fileno())
        shutil.copymode(path, partial)
        os.replace(partial, target)
        _fault(name, "renamed")
        journal.record(dest, name, digest.hexdigest(), source=path)
        _fault(name, "journaled")
        copied.append(name)
        status.update(files_done=number)
    return copied


def _tree_bytes(directory: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            with contextlib.suppress(OSError):  # a download's temporary file may vanish
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _hub_total(hf_cli: str, repo_id: str, revision: str) -> int | None:
    """Size of the repository at REV from the hub (the hf CLI's venv), or None."""
    python = Path(hf_cli).with_name("python")
    code = ("import sys; from huggingface_hub import HfApi; "
            "i = HfApi().model_info(sys.argv[1], revision=sys.argv[2], files_metadata=True); "
            "print(sum(s.size or 0 for s in i.siblings))")
    try:
        out = subprocess.run([str(python), "-c", code, repo_id, revision], capture_output=True,
                             text=True, timeout=120, check=True).stdout
        return int(out.strip())
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def _download(opts, dest: Path, status: Status) -> None:
    status.update(force=True, phase="downloading", bytes_total=_hub_total(opts.hf_cli, opts.repo_id, opts.revision))
    # The token comes from HF_TOKEN_PATH in the environment, never the command line.
    proc = subprocess.Popen([opts.hf_cli, "download", opts.repo_id, "--revision", opts.revision,
                             "--local-dir", str(dest)], stdout=subprocess.DEVNULL)
    while proc.poll() is None:
        status.update(bytes_done=_tree_bytes(dest))
        time.sleep(1)
    if proc.returncode:
        raise Invalid(f"hf download {opts.repo_id} --revision {opts.revision} failed (rc {proc.returncode})")


class Lock:
    """flock on DEST.lock (released by the kernel when its holder dies), the holder recorded in it."""

    def __init__(self, dest: Path, timeout: float, what: str):
        self.path = Path(f"{dest}.lock")
        self.handle = open(self.path, "a+")  # noqa: SIM115 (held for the whole sync)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                    raise
            if time.monotonic() >= deadline:
                self.handle.seek(0)
                try:
                    holder = json.loads(self.handle.read())
                    who = (f"pid {holder['pid']} on {holder['host']} ({holder['what']}) "
                           f"since {holder['since']}")
                except (ValueError, KeyError):
                    who = "a process that recorded nothing"
                self.handle.close()
                raise Invalid(f"{dest} is locked by {who}; waited {timeout:.0f} s "
                              f"(the lock, {self.path}, frees itself when that process ends)")
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        self.record(what)

    def record(self, what: str) -> None:
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                      "what": what, "since": _now()}))
        self.handle.flush()


def _revisions(dest: Path) -> Path:
    return dest.with_name(dest.name + ".revisions")


def _switch(dest: Path, target: Path) -> bool:
    """Point DEST at TARGET (relative symlink, renamed over DEST: atomic). True if it changed."""
    link = os.path.relpath(target, dest.parent)
    if dest.is_symlink() and os.readlink(dest) == link:
        return False
    tmp = dest.with_name(f".{dest.name}.switch.{os.getpid()}")
    if tmp.is_symlink():
        tmp.unlink()
    os.symlink(link, tmp)
    os.replace(tmp, dest)
    return True


def _adopt_plain_directory(dest: Path, revision: str) -> bool:
    """An older layout kept the checkpoint in DEST itself: move it to its revision directory."""
    if dest.is_symlink() or not dest.is_dir():
        return False
    marker = dest / MARKER
    owner = marker.read_text().strip() if marker.is_file() else revision
    target = _revisions(dest) / _safe(owner)
    if target.exists():
        target = _revisions(dest) / f"{_safe(owner)}.adopted-{int(time.time())}"
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(dest, target)
    _switch(dest, target)
    return True


def _safe(revision: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", revision)


def sync(opts, lock: Lock, status: Status) -> dict:
    dest = Path(opts.dest)
    revdir = _revisions(dest) / _safe(opts.revision)
    adopted = _adopt_plain_directory(dest, opts.revision)
    marker = revdir / MARKER
    problem = None
    if marker.is_file() and marker.read_text().strip() == opts.revision:
        try:
            verify(revdir, opts.manifest, full=False)
            switched = _switch(dest, revdir)
            return {"changed": switched or adopted, "revision": opts.revision, "state": "verified",
                    "path": str(revdir), "copied": [], "hashed_bytes": 0}
        except Invalid as exc:
            problem = str(exc)
            marker.unlink()
    problem = problem or f"{revdir} holds no verified copy of revision {opts.revision}"
    revdir.mkdir(parents=True, exist_ok=True)
    for leftover in revdir.rglob("*.partial"):
        leftover.unlink()
    journal = Journal(revdir)
    copied = []
    if opts.from_dir:
        copied = _copy_tree(Path(opts.from_dir), revdir, journal, status)
    else:
        _download(opts, revdir, status)
    to_hash = [n for n in (json.loads((revdir / opts.manifest).read_text()) if opts.manifest
                           and (revdir / opts.manifest).is_file() else {}) if journal.sha256(revdir, n) is None]
    status.update(force=True, phase="verifying", bytes_done=0, current=None,
                  bytes_total=sum((revdir / n).stat().st_size for n in to_hash if (revdir / n).is_file()))
    _shards, hashed = verify(revdir, opts.manifest, full=True, journal=journal, status=status)
    _fault(MARKER, "before")
    _write_atomic(marker, opts.revision + "\n")
    _fault(MARKER, "written")
    _switch(dest, revdir)
    return {"changed": True, "revision": opts.revision, "state": "synced", "reason": problem,
            "path": str(revdir), "copied": copied, "hashed_bytes": hashed}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_status(path: Path) -> dict:
    """The status file, with a worker that died without a result reported as such."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return {"phase": "unknown", "problem": f"no readable status in {path} ({exc})"}
    if "result" not in data and data.get("host") == socket.gethostname() and not _alive(int(data["pid"])):
        data["phase"] = "died"
        data["problem"] = (f"the sync (pid {data['pid']}) ended without a result at {data.get('updated')}; "
                           "rerun to resume it")
    return data


def _run_sync(opts, cli) -> tuple[dict, int]:
    if not opts.from_dir and not opts.repo_id:
        cli.error("sync needs --from-dir or --repo-id")
    dest = Path(opts.dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # The status file is written only under the lock: a refused run leaves the holder's alone.
    lock = Lock(dest, opts.lock_timeout, f"pd-model-sync sync, revision {opts.revision}")
    status = Status(opts.status_file)
    if opts.detach:
        ready_r, ready_w = os.pipe()
        if os.fork():
            # Return once the worker's first status is written, so no reader sees a previous run's.
            os.close(ready_w)
            os.read(ready_r, 1)
            return {"changed": False, "state": "started", "status_file": opts.status_file}, 0
        os.close(ready_r)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        status.data["pid"] = os.getpid()
        lock.record(f"pd-model-sync sync, revision {opts.revision}")
        status.update(force=True)
        os.write(ready_w, b"1")
        os.close(ready_w)
    else:
        status.update(force=True)
    try:
        result, rc = sync(opts, lock, status), 0
    except (Invalid, OSError, ValueError) as exc:
        result, rc = {"changed": False, "state": "invalid", "problem": str(exc)}, 1
    if rc == 0:
        size = _tree_bytes(Path(result["path"]))
        status.update(bytes_done=size, bytes_total=size)
    status.update(force=True, phase="done" if rc == 0 else "failed", result=result, current=None)
    if opts.detach:
        os._exit(rc)
    return result, rc


def main(argv: list[str]) -> int:
    cli = argparse.ArgumentParser(description="sync and verify a checkpoint")
    cli.add_argument("command", choices=("sync", "verify", "status"))
    cli.add_argument("dest", help="checkpoint path (for status: the status file)")
    cli.add_argument("--revision", default="local")
    cli.add_argument("--from-dir")
    cli.add_argument("--repo-id")
    cli.add_argument("--hf-cli", default="hf")
    cli.add_argument("--manifest")
    cli.add_argument("--lock-timeout", type=float, default=600.0, help="seconds to wait for another sync")
    cli.add_argument("--status-file", help="write progress (JSON) here")
    cli.add_argument("--detach", action="store_true", help="return once locked; result goes to --status-file")
    opts = cli.parse_args(argv)
    if opts.detach and not opts.status_file:
        cli.error("--detach needs --status-file")
    try:
        if opts.command == "status":
            result, rc = read_status(Path(opts.dest)), 0
        elif opts.command == "verify":
            dest = Path(opts.dest)
            shards, _ = verify(dest, opts.manifest, full=False)
            marker = dest / MARKER
            if not marker.is_file():
                raise Invalid(f"{dest} carries no {MARKER} marker: it was never fully synced")
            result, rc = {"changed": False, "state": "verified", "revision": marker.read_text().strip(),
                          "shards": shards, "path": str(dest.resolve())}, 0
        else:
            result, rc = _run_sync(opts, cli)
    except Invalid as exc:
        result, rc = {"changed": False, "state": "invalid", "problem": str(exc)}, 1
    print(json.dumps(result))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
