#!/usr/bin/python
"""Documentation of the pd_wait_healthy action (plugins/action/pd_wait_healthy.py).

ansible-doc finds module docs only in a module file; the work is done by the
action plugin of the same name on the controller, so this module never runs
on a node (like ansible.builtin.debug's module file).
"""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: pd_wait_healthy
short_description: Wait for a vLLM instance or router to become healthy, printing progress
version_added: "1.0.0"
description:
  - Polls O(url) from the target node until it answers HTTP 200. When O(unit) is given, the
    unit's state and new journal lines of its current start are read on each attempt, and a
    progress line names vLLM's startup phase from its own log messages (loading the model,
    loading shards k/n, compiling, memory profiled, capturing CUDA graphs k/n, engine ready,
    API server starting) whenever it changes and at least every 30 s; without a unit, or
    before vLLM logs a phase, the line gives the probe's last answer.
  - A failed or restarted unit ends the wait at once, and any failure shows the unit's last
    journal lines, the last exception message among them and the last phase seen.
  - Runs as an action plugin on the controller; the probes run on the target node, so the URL
    need not be reachable from the controller.
  - Skipped in check mode.
options:
  name:
    description: Label for progress lines (the instance name).
    type: str
    required: true
  url:
    description: Health URL, probed from the target node.
    type: str
    required: true
  unit:
    description: systemd unit whose state and journal are read.
    type: str
  timeout:
    description: Seconds before giving up.
    type: int
    default: 600
  interval:
    description: Seconds between attempts.
    type: int
    default: 5
  journal_lines:
    description: Journal lines shown on failure.
    type: int
    default: 60
attributes:
  check_mode:
    support: none
    description: Skipped in check mode (nothing is probed).
  action:
    support: full
    description: Runs on the controller as an action plugin.
author: vllm-pd-ansible developers
"""

EXAMPLES = r"""
- name: Wait for the prefill instance
  pd_wait_healthy:
    name: prefill-0
    url: http://10.0.0.11:8000/health
    unit: vllm-prefill-0.service
    timeout: 900
"""

RETURN = r"""
attempts:
  description: Probes made until the URL answered 200.
  returned: success
  type: int
elapsed:
  description: Seconds waited.
  returned: success
  type: float
url:
  description: The URL that answered.
  returned: success
  type: str
journal:
  description: The unit's last journal lines.
  returned: failure with O(unit)
  type: list
  elements: str
"""


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "url": {"type": "str", "required": True},
            "unit": {"type": "str"},
            "timeout": {"type": "int", "default": 600},
            "interval": {"type": "int", "default": 5},
            "journal_lines": {"type": "int", "default": 60},
        },
    )
    module.fail_json(msg="pd_wait_healthy runs as an action plugin on the controller; "
                         "this module file only holds its documentation")


if __name__ == "__main__":
    main()
