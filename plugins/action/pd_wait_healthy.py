"""Wait until an instance answers its health URL, with progress lines.

Runs on the controller and probes from the target node (the URL need not be
reachable from the controller). While it waits it prints what vLLM is doing,
read from the unit's journal (loading shards k/n, compiling, capturing CUDA
graphs, ...), when that changes and at least every 30 s; a unit that fails
or restarts ends the wait at once with its last journal lines, as does the
timeout.

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
# A progress line at least this often while the phase stays the same.
_PROGRESS_EVERY_S = 30

# vLLM's startup, from its own messages (vLLM 0.33 source; the module is
# named after each pattern). The last journal line that matches one says
# where the start is. tqdm bars (shards, CUDA graphs) refresh with "\r".
_SHARDS = re.compile(
    r"(?:Loading (?:safetensors|np_cache|pt) checkpoint shards(?: \(eager\))?|Multi-thread loading shards"
    r"|Loading safetensors using [A-Za-z ]+?):\s+\d+% Completed \| (\d+)/(\d+) ")
_PHASES: tuple[tuple[re.Pattern, str], ...] = (
    # v1/worker/gpu_model_runner.py and cpu_model_runner.py; v1/worker/gpu/model_runner.py
    (re.compile(r"Starting to load model (\S+?)\.\.\.|Loading model from scratch\.\.\."), "loading the model"),
    # model_executor/model_loader/weight_utils.py (_BAR_FORMAT)
    (_SHARDS, "loading shards {0}/{1}"),
    # model_executor/model_loader/default_loader.py
    (re.compile(r"Loading weights took ([\d.]+) seconds"), "weights loaded in {0} s"),
    # v1/worker/gpu_model_runner.py
    (re.compile(r"Model loading took ([\d.]+) GiB memory and ([\d.]+) seconds"),
     "model loaded ({0} GiB per GPU)"),
    # compilation/monitor.py, compilation/backends.py
    (re.compile(r"Starting torch\.compile"), "compiling (torch.compile)"),
    (re.compile(r"Dynamo bytecode transform time: ([\d.]+) s"), "compiling (torch.compile, graphs traced)"),
    (re.compile(r"Compiling a graph for compile range (\(\d+, \d+\)) takes ([\d.]+) s"),
     "compiling (torch.compile, range {0} done)"),
    (re.compile(r"torch\.compile took ([\d.]+) s in total"), "compiled in {0} s"),
    # v1/worker/cpu_model_runner.py
    (re.compile(r"Warming up model for the compilation"), "warming up (compiling)"),
    # v1/worker/gpu_worker.py, v1/core/kv_cache_utils.py
    (re.compile(r"Available KV cache memory: ([\d.]+) GiB"), "memory profiled ({0} GiB for the KV cache)"),
    (re.compile(r"KV cache size: ([\d,]+) tokens"), "KV cache allocated ({0} tokens)"),
    # v1/worker/gpu_model_runner.py, v1/worker/gpu/cudagraph_utils.py (tqdm's default bar)
    (re.compile(r"Profiling CUDA graph memory"), "capturing CUDA graphs"),
    (re.compile(r"Capturing CUDA graphs \(([^)]*)\):\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)"),
     "capturing CUDA graphs ({0}) {1}/{2}"),
    (re.compile(r"Graph capturing finished in (\d+) secs"), "CUDA graphs captured in {0} s"),
    # v1/engine/core.py
    (re.compile(r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+) s"),
     "engine ready after {0} s, starting the API server"),
    # entrypoints/launchers/api_server/entry.py
    (re.compile(r"Starting vLLM server on (\S+)"), "API server starting on {0}"),
)


def journal_phase(lines: list[str]) -> str | None:
    """What vLLM is doing, from the last of `lines` (journal messages, oldest
    first) that names a startup phase; None when none does."""
    for line in reversed(lines):
        # A tqdm bar redrawn with "\r" arrives as one line: its last frame counts.
        for frame in reversed(line.split("\r")):
            for pattern, template in _PHASES:
                found = pattern.search(frame)
                if found:
                    return template.format(*found.groups())
    return None


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("name", "url", "unit", "timeout", "interval", "journal_lines"))

    def _run(self, module: str, args: dict, task_vars: dict) -> dict:
        return self._execute_module(module_name=module, module_args=args, task_vars=task_vars)

    def _unit_state(self, unit: str, task_vars: dict) -> dict:
        res = self._run("ansible.builtin.command",
                        {"argv": ["systemctl", "show", unit,
                                  "--property=ActiveState,SubState,NRestarts,MainPID,InvocationID"]},
                        task_vars)
        state = {}
        for line in res.get("stdout", "").splitlines():
            key, _, value = line.partition("=")
            state[key] = value
        return state

    def _journal_since(self, unit: str, invocation: str, cursor: str | None,
                       task_vars: dict) -> tuple[list[str], str | None]:
        """The messages of this start of `unit` after `cursor` (the last 400
        on the first read) and the cursor to read on from."""
        # This start only (a previous start's lines would give a stale phase).
        match = f"_SYSTEMD_INVOCATION_ID={invocation}" if invocation else f"--unit={unit}"
        # --all: a tqdm frame's "\r" would otherwise turn the line into "[blob data]".
        argv = ["journalctl", match, "--all", "--no-pager", "-o", "cat", "--show-cursor"]
        argv += [f"--after-cursor={cursor}"] if cursor else ["-n", "400"]
        res = self._run("ansible.builtin.command", {"argv": argv}, task_vars)
        lines = res.get("stdout_lines", []) or []
        if lines and lines[-1].startswith("-- cursor: "):
            cursor = lines.pop()[len("-- cursor: "):]
        return lines, cursor

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
        phase, cursor, invocation, shown, shown_at = None, None, None, None, 0.0
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
                                  f"({attempt} attempts, last: {reason}"
                                  + (f"; vLLM was {phase})" if phase else ")"), unit, lines, task_vars)
            if unit:
                if state.get("InvocationID") != invocation:
                    # The (no-block) restart took effect: read the new start from its beginning.
                    invocation, phase, cursor = state.get("InvocationID"), None, None
                new_lines, cursor = self._journal_since(unit, invocation or "", cursor, task_vars)
                phase = journal_phase(new_lines) or phase
            status = phase or f"not ready ({str(reason)[:80]})"
            if status != shown or elapsed - shown_at >= _PROGRESS_EVERY_S:
                display.display(f"  {name} on {delegated}: {status}, {elapsed:.0f} s elapsed")
                shown, shown_at = status, elapsed
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
