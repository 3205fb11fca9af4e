#!/usr/bin/python
"""Documentation of the pd_model_sync action (plugins/action/pd_model_sync.py).

ansible-doc finds module docs only in a module file; the work is done by the
action plugin of the same name on the controller, so this module never runs
on a node.
"""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: pd_model_sync
short_description: Sync a checkpoint with pd-model-sync in the background, printing bytes done of total
version_added: "1.0.0"
description:
  - Starts O(argv) (a C(pd-model-sync sync) command line) on the target with C(--status-file) and
    C(--detach). That returns once the checkpoint's lock is held, or fails at once with the lock
    holder's pid, host and start time when another sync holds it past its C(--lock-timeout).
  - Then reads the status file every O(interval) seconds and prints the phase (copying, downloading,
    verifying), bytes done of total and the current file at least every O(report_every) seconds.
  - Returns the sync's result; a sync that died without one fails the task (the next run resumes it).
  - Skipped in check mode.
options:
  argv:
    description: The C(pd-model-sync sync) command line, without C(--status-file) and C(--detach).
    type: list
    elements: str
    required: true
  status_file:
    description: Status file on the target, written by the sync.
    type: str
    required: true
  name:
    description: Label for progress lines.
    type: str
    default: weights
  tool:
    description: Path of pd-model-sync on the target (for C(status)); the first element of O(argv) by default.
    type: str
  interval:
    description: Seconds between reads of the status file.
    type: int
    default: 10
  report_every:
    description: Seconds between progress lines when nothing else changes.
    type: int
    default: 30
attributes:
  check_mode:
    support: none
    description: Skipped in check mode (nothing is copied).
  action:
    support: full
    description: Runs on the controller as an action plugin; the sync runs on the target.
author: vllm-pd-ansible developers
"""

EXAMPLES = r"""
- name: Sync the checkpoint
  pd_model_sync:
    argv: [/usr/local/sbin/pd-model-sync, sync, /models/r1, --revision, main, --from-dir, /srv/mirror/r1]
    status_file: /models/r1.sync-status.json
"""

RETURN = r"""
sync:
  description: The result pd-model-sync wrote (changed, state, revision, path, copied, hashed_bytes, reason).
  returned: always
  type: dict
elapsed:
  description: Seconds the sync took.
  returned: success
  type: float
"""


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "argv": {"type": "list", "elements": "str", "required": True},
            "status_file": {"type": "str", "required": True},
            "name": {"type": "str", "default": "weights"},
            "tool": {"type": "str"},
            "interval": {"type": "int", "default": 10},
            "report_every": {"type": "int", "default": 30},
        },
    )
    module.fail_json(msg="pd_model_sync runs as an action plugin on the controller; "
                         "this module file only holds its documentation")


if __name__ == "__main__":
    main()
