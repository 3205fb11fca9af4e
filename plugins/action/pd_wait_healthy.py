"""Wait until an instance answers its health URL, with progress lines.

Runs on the controller and probes from the target node (the URL need not be
reachable from the controller): each attempt prints the instance, attempt
number and elapsed time; a unit that fails or restarts ends the wait at once
with its last journal lines, as does the timeout.

Its options and return values are documented in plugins/modules/pd_wait_healthy.py
(`ansible-doc -t module pd_wait_healthy`): ansible-doc reads module docs only
from a module file.
"""

from __future__ import annotations

import re
import time

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()
_CAUSE = re.compile(r"\b[A-Z][A-Za-z]*(Error|Exception): ")


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("name", "url", "unit", "timeout", "interval", "journal_lines"))

    def _run(self, module: str, args: dict, task_vars: dict) -> dict:
        return self._execute_module(module_name=module, module_args=args, task_vars=task_vars)

    def _unit_state(self, unit: str, task_vars: dict) -> dict:
        res = self._run("ansible.builtin.command",
                        {"argv": ["systemctl", "show", unit, "--property=ActiveState,SubState,NRestarts,MainPID"]},
                        task_vars)
        state = {}
        for line in res.get("stdout", "").splitlines():
            key, _, value = line.partition("=")
            state[key] = value
        return state

    def _journal(self, unit: str, lines: int, task_vars: dict) -> list[str]:
        res = self._run("ansible.builtin.command",
                        {"argv": ["journalctl", "-u", unit, "-n", str(lines), "--no-pager", "-o", "short-iso"]},
                        task_vars)
        return res.get("stdout_lines", []) or [res.get("stderr", "")]

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        missing = [k for k in ("name", "url") if not args.get(k)]
        if missing:
            raise AnsibleActionFail(f"pd_wait_healthy needs {', '.join(missing)}")
        name, url, unit = str(args["name"]), str(args["url"]), args.get("unit")
        timeout, interval = int(args.get("timeout", 600)), max(1, int(args.get("interval", 5)))
        lines = int(args.get("journal_lines", 60))
        if self._task.check_mode:
            result.update(skipped=True, msg=f"check mode: {name} not probed")
            return result
        host = (task_vars or {}).get("inventory_hostname", "?")
        delegated = self._task.delegate_to or host
        started = time.monotonic()
        initial = self._unit_state(unit, task_vars) if unit else {}
        attempt = 0
        while True:
            attempt += 1
            probe = self._run("ansible.builtin.uri", {"url": url, "status_code": [200], "timeout": 5}, task_vars)
            elapsed = time.monotonic() - started
            if not probe.get("failed") and probe.get("status") == 200:
                display.display(f"  {name} healthy on {delegated} after {elapsed:.0f} s ({attempt} attempts)")
                result.update(changed=False, attempts=attempt, elapsed=round(elapsed, 1), url=url,
                              msg=f"{name} healthy after {elapsed:.0f} s")
                return result
            reason = probe.get("msg") or f"HTTP {probe.get('status')}"
            if "refused" in str(reason):
                reason = "connection refused (still loading)"
            if unit:
                state = self._unit_state(unit, task_vars)
                restarted = (int(state.get("NRestarts") or 0) > int(initial.get("NRestarts") or 0)
                             or state.get("SubState") == "auto-restart")
                # Right after a no-block (re)start the unit may still read inactive.
                stopped = (state.get("ActiveState") == "failed" and elapsed > interval) or (
                    state.get("ActiveState") == "inactive" and elapsed > 3 * interval)
                if stopped or restarted:
                    what = "crashed and is restarting" if restarted else state.get("ActiveState")
                    return self._fail(result, f"{name}: unit {unit} {what} on {delegated} after {elapsed:.0f} s "
                                      f"while waiting for {url}", unit, lines, task_vars)
            if elapsed >= timeout:
                return self._fail(result, f"{name}: {url} not healthy on {delegated} after {elapsed:.0f} s "
                                  f"({attempt} attempts, last: {reason})", unit, lines, task_vars)
            display.display(f"  {name} on {delegated}: attempt {attempt}, {elapsed:.0f} s elapsed, "
                            f"not ready ({str(reason)[:80]})")
            time.sleep(interval)

    def _fail(self, result, msg, unit, lines, task_vars):
        journal = self._journal(unit, lines, task_vars) if unit else []
        # The likely cause: the last exception message in the journal (the
        # traceback above it is in `journal`).
        cause = next((line.split("]: ", 1)[-1] for line in reversed(journal)
                      if _CAUSE.search(line)), None)
        msg += f"; cause: {cause}" if cause else ""
        msg += f"; last {len(journal)} journal lines of {unit} follow" if journal else ""
        result.update(failed=True, msg=msg, journal=journal)
        return result
