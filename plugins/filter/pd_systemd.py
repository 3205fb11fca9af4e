"""Ansible adapter for the systemd helpers in lib/pd_planner/systemd.py."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from pd_planner import PlanError, systemd
from pd_planner.values import plain

# Each filter of this file has its ansible-doc entry in plugins/filter/<filter name>.yml
# (ansible-doc reads that sidecar when the Python file holds no DOCUMENTATION).


def _wrap(func):
    def run(*args, **kwargs):
        try:
            return func(*(plain(a) for a in args), **{k: plain(v) for k, v in kwargs.items()})
        except PlanError as exc:
            raise AnsibleFilterError(f"{func.__name__}: {exc}") from None
    return run


class FilterModule:
    def filters(self):
        return {
            "pd_exec_line": _wrap(systemd.exec_line),
            "pd_env_file": _wrap(systemd.env_file),
            "pd_host_workers": _wrap(systemd.host_workers),
            "pd_restart_batches": _wrap(systemd.restart_batches),
        }
