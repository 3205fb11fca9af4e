"""Ansible adapter for lib/pd_planner/router.py (router worker sets)."""

from __future__ import annotations

import os
import sys

_LIB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "lib")
if os.path.normpath(_LIB) not in sys.path:
    sys.path.insert(0, os.path.normpath(_LIB))

from pd_planner import router  # noqa: E402
from pd_planner.values import plain  # noqa: E402

# Each filter of this file has its ansible-doc entry in plugins/filter/<filter name>.yml
# (ansible-doc reads that sidecar when the Python file holds no DOCUMENTATION).


class FilterModule:
    def filters(self):
        return {
            "pd_router_unit_workers": lambda text: router.unit_workers(str(text)),
            "pd_router_unit_settings": lambda text: router.unit_settings(str(text)),
            "pd_router_listed_workers": lambda answer: router.listed_workers(plain(answer)),
        }
