"""Ansible adapter for lib/pd_planner/router.py (router worker sets)."""

from __future__ import annotations

import os
import sys

_LIB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "lib")
if os.path.normpath(_LIB) not in sys.path:
    sys.path.insert(0, os.path.normpath(_LIB))

from pd_planner import router  # noqa: E402
from pd_planner.values import plain  # noqa: E402

DOCUMENTATION = r"""
name: pd_router_unit_workers
short_description: The prefill and decode worker URLs of a rendered vllm-router unit
version_added: "1.0.0"
description:
  - Returns a dict with the sorted C(prefill) and C(decode) URL lists. The same file holds
    C(pd_router_unit_settings) (the unit without worker lines and comments) and
    C(pd_router_listed_workers) (the same shape from the router's C(/workers)).
options:
  _input:
    description: The unit file's text.
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Workers the installed unit starts the router with
  ansible.builtin.debug:
    msg: "{{ unit_text | pd_router_unit_workers }}"
"""

RETURN = r"""
_value:
  description: Worker URLs per kind.
  type: dict
"""


class FilterModule:
    def filters(self):
        return {
            "pd_router_unit_workers": lambda text: router.unit_workers(str(text)),
            "pd_router_unit_settings": lambda text: router.unit_settings(str(text)),
            "pd_router_listed_workers": lambda answer: router.listed_workers(plain(answer)),
        }
