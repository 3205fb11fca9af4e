"""Ansible adapter for lib/pd_planner/router.py (router worker sets)."""

from __future__ import annotations

from pd_planner import router
from pd_planner.values import plain

# Each filter of this file has its ansible-doc entry in plugins/filter/<filter name>.yml
# (ansible-doc reads that sidecar when the Python file holds no DOCUMENTATION).


class FilterModule:
    def filters(self):
        return {
            "pd_router_unit_settings": lambda text: router.unit_settings(str(text)),
            "pd_router_listed_workers": lambda answer: router.listed_workers(plain(answer)),
        }
