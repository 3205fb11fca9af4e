"""Ansible adapter for the systemd helpers in lib/pd_planner/systemd.py."""

from __future__ import annotations

import os
import sys

from ansible.errors import AnsibleFilterError

_LIB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "lib")
if os.path.normpath(_LIB) not in sys.path:
    sys.path.insert(0, os.path.normpath(_LIB))

from pd_planner import PlanError, systemd  # noqa: E402
from pd_planner.values import plain  # noqa: E402

DOCUMENTATION = r"""
name: pd_exec_line
short_description: An argument list as an exact systemd ExecStart value
version_added: "1.0.0"
description:
  - Escapes every argument (quotes, backslashes, C(%) specifiers, C($)
    references) so the process receives exactly this argv; no shell is
    involved. The filters C(pd_env_file), C(pd_host_workers) and
    C(pd_restart_batches) live in the same file.
options:
  _input:
    description: The argv, program first (an absolute path).
    type: list
    elements: str
    required: true
  keep_env:
    description: Names whose C(${NAME}) arguments stay environment references.
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Render a unit
  ansible.builtin.template:
    src: unit.j2
    dest: /etc/systemd/system/vllm-prefill-0.service
    mode: "0644"
  # unit.j2: ExecStart={{ [launcher] + args | pd_exec_line }}
"""

RETURN = r"""
_value:
  description: The ExecStart value, continued over lines.
  type: str
"""


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
            "pd_kv_writable_paths": _wrap(systemd.kv_writable_paths),
        }
