"""Ansible adapter for lib/pd_planner/imex_restart.py (what an IMEX restart interrupts, in which order)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from pd_planner import PlanError, imex_restart
from pd_planner.values import plain

# Documented in the sidecar plugins/filter/pd_imex_restart_steps.yml.


def _steps(plan, changed, running):
    try:
        return imex_restart.imex_restart_steps(plain(plan), [str(h) for h in changed], plain(running))
    except PlanError as err:
        raise AnsibleFilterError(str(err)) from None


class FilterModule:
    def filters(self):
        return {"pd_imex_restart_steps": _steps}
