"""Run pd-model-sync on the target in the background and print its progress.

A copy or download of a checkpoint takes from minutes to hours. This action
starts `pd-model-sync sync ... --detach` on the target (it returns once it
holds the checkpoint's lock, or fails naming the holder), then reads the
sync's status file every `interval` seconds and prints bytes done of total,
the phase and the current file at least every `report_every` seconds, so the
person running ansible-playbook sees it move. It returns the sync's own
result; a sync that died (killed, node rebooted) fails the task, and the next
run resumes it. A sync still running from an interrupted ansible-playbook is
followed to its end first (then checked by a sync of our own).

Its options and return values are documented in plugins/modules/pd_model_sync.py.
"""

from __future__ import annotations

import json
import time

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()


def _size(count: float | None) -> str:
    if count is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{count:.0f} B"
        count /= 1000
    return "?"


def progress_line(name: str, host: str, status: dict, elapsed: float) -> str:
    """One line: what the sync does, bytes done of total, the current file."""
    done, total = status.get("bytes_done") or 0, status.get("bytes_total")
    share = f" ({100 * done / total:.0f}%)" if total else ""
    files = (f", {status.get('files_done', 0)}/{status['files_total']} files done"
             if status.get("files_total") else "")
    current = f", {status['current']}" if status.get("current") else ""
    minutes, seconds = divmod(int(elapsed), 60)
    return (f"  {name} on {host}: {status.get('phase', '?')} {_size(done)} of {_size(total)}{share}"
            f"{files}{current}, {minutes}m{seconds:02d}s")


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("argv", "status_file", "name", "interval", "report_every", "tool"))

    def _command(self, argv: list[str], task_vars: dict) -> dict:
        return self._execute_module(module_name="ansible.builtin.command",
                                    module_args={"argv": argv}, task_vars=task_vars)

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        missing = [k for k in ("argv", "status_file") if not args.get(k)]
        if missing:
            raise AnsibleActionFail(f"pd_model_sync needs {', '.join(missing)}")
        argv, status_file = [str(a) for a in args["argv"]], str(args["status_file"])
        name = str(args.get("name") or "weights")
        tool = str(args.get("tool") or argv[0])
        interval = max(1, int(args.get("interval", 10)))
        report_every = max(interval, int(args.get("report_every", 30)))
        if self._task.check_mode:
            result.update(skipped=True, changed=False, msg=f"check mode: {name} not synced")
            return result
        host = (task_vars or {}).get("inventory_hostname", "?")
        started = time.monotonic()
        # A sync left running by an interrupted ansible-playbook: follow it to its end, then check.
        earlier = _json(self._command([tool, "status", status_file], task_vars).get("stdout"))
        if earlier.get("pid") and "result" not in earlier and earlier.get("phase") not in ("died", "unknown"):
            display.display(f"  {name} on {host}: following the sync already running "
                             f"(pid {earlier['pid']}, since {earlier.get('started')})")
            self._follow(name, host, tool, status_file, interval, report_every, started, task_vars)
        start = self._command([*argv, "--status-file", status_file, "--detach"], task_vars)
        if start.get("rc") != 0:
            problem = _json(start.get("stdout")).get("problem") or start.get("stderr") or start.get("msg")
            result.update(failed=True, msg=f"{name} on {host}: {problem}")
            return result
        status = self._follow(name, host, tool, status_file, interval, report_every, started, task_vars)
        elapsed = time.monotonic() - started
        outcome = status.get("result") or {}
        if status.get("phase") != "done":
            result.update(failed=True, sync=outcome,
                          msg=f"{name} on {host}: {outcome.get('problem') or status.get('problem')}")
            return result
        result.update(changed=bool(outcome.get("changed")), sync=outcome, elapsed=round(elapsed, 1),
                      msg=f"{name}: revision {outcome.get('revision')} {outcome.get('state')}")
        return result

    def _follow(self, name, host, tool, status_file, interval, report_every, started, task_vars) -> dict:
        """Read the status file until the sync has a result or died; print progress lines."""
        last_line, last_phase = time.monotonic(), None
        while True:
            time.sleep(interval)
            read = self._command([tool, "status", status_file], task_vars)
            status = _json(read.get("stdout"))
            elapsed = time.monotonic() - started
            if "result" in status:
                display.display(progress_line(name, host, status, elapsed))
                return status
            if status.get("phase") in ("died", "unknown") or read.get("rc") != 0:
                return {**status, "problem": status.get("problem") or read.get("stderr") or read.get("msg")}
            if time.monotonic() - last_line >= report_every or status.get("phase") != last_phase:
                display.display(progress_line(name, host, status, elapsed))
                last_line, last_phase = time.monotonic(), status.get("phase")


def _json(text: str | None) -> dict:
    try:
        value = json.loads(text or "")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
