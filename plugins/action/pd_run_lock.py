"""One site.yml run at a time against an inventory: a lock file on the controller.

`state: acquired` creates the lock file (O_EXCL) recording user, host, pid of
ansible-playbook, playbook and start time, or fails naming the run that holds
it and since when. A lock whose run is gone is taken over with a warning:
on this host, when its ansible-playbook pid no longer runs (a run that failed
or was interrupted never reached its release); from another host (a lock file
on shared storage), once it is older than `stale_after` seconds. In check mode
a held lock is still refused, but none is created. `state: released` removes
the lock if this run holds it.

Its options are documented in plugins/modules/pd_run_lock.py.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from pathlib import Path

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()


def _playbook_pid() -> int:
    # Tasks run in worker processes forked from ansible-playbook itself.
    return os.getppid()


def _running(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"ansible" in cmdline


def _read(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"unreadable": True}
    return holder if isinstance(holder, dict) else {"unreadable": True}


def describe(holder: dict, now: float) -> str:
    if holder.get("unreadable"):
        return "a run that left an unreadable lock file"
    minutes = max(0, int(now - holder.get("epoch", now))) // 60
    return (f"{holder.get('user')}@{holder.get('host')} (ansible-playbook pid {holder.get('pid')}, "
            f"{holder.get('playbook')}) since {holder.get('since')} ({minutes} min ago)")


def stale_reason(holder: dict, now: float, stale_after: int) -> str | None:
    """Why the holder's run is over, or None while it may still run."""
    if holder.get("unreadable"):
        return "the lock file is unreadable"
    if holder.get("host") == socket.gethostname():
        return None if _running(int(holder.get("pid", 0))) else f"pid {holder.get('pid')} no longer runs"
    if now - holder.get("epoch", now) > stale_after:
        return f"it is older than {stale_after} s (pd_run_lock_stale_after) and was taken on another host"
    return None


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("path", "state", "stale_after", "playbook"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        if not args.get("path"):
            raise AnsibleActionFail("pd_run_lock needs path (the lock file on the controller)")
        state = args.get("state", "acquired")
        if state not in ("acquired", "released"):
            raise AnsibleActionFail(f"pd_run_lock: state is {state!r}; valid: acquired, released")
        path, now = Path(str(args["path"])).expanduser(), time.time()
        stale_after = int(args.get("stale_after", 43200))
        holder = _read(path)
        ours = bool(holder) and holder.get("pid") == _playbook_pid() and holder.get("host") == socket.gethostname()
        if state == "released":
            if ours and not self._task.check_mode:
                path.unlink(missing_ok=True)
            result.update(changed=False, msg=f"run lock {path} released" if ours else f"run lock {path} not held")
            return result
        if ours:
            result.update(changed=False, msg=f"run lock {path} already held by this run")
            return result
        if holder:
            why = stale_reason(holder, now, stale_after)
            if why is None:
                return self._refuse(result, path, holder, now)
            display.warning(f"Taking over the run lock {path} from {describe(holder, now)}: {why}.")
            if not self._task.check_mode:
                path.unlink(missing_ok=True)
        if self._task.check_mode:
            result.update(changed=False, msg=f"check mode: run lock {path} is free (not taken)")
            return result
        mine = {"user": getpass.getuser(), "host": socket.gethostname(), "pid": _playbook_pid(),
                "playbook": str(args.get("playbook") or "ansible-playbook"),
                "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)), "epoch": now}
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            # Another run took it between our read and our create.
            return self._refuse(result, path, _read(path) or {"unreadable": True}, now)
        with os.fdopen(fd, "w") as handle:
            json.dump(mine, handle)
        result.update(changed=False, lock=mine, msg=f"run lock {path} taken")
        return result

    @staticmethod
    def _refuse(result: dict, path: Path, holder: dict, now: float) -> dict:
        result.update(failed=True, holder=holder, msg=(
            f"Another run holds the lock of this inventory: {describe(holder, now)}. Wait for it to "
            f"finish. If that run is gone, remove {path} (a lock taken on this host is freed by itself "
            "once its ansible-playbook no longer runs)."))
        return result
