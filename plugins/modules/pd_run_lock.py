#!/usr/bin/python
"""Documentation of the pd_run_lock action (plugins/action/pd_run_lock.py).

ansible-doc finds module docs only in a module file; the work is done by the
action plugin of the same name on the controller, so this module never runs
on a node.
"""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: pd_run_lock
short_description: Refuse a second concurrent run against the same inventory, naming who holds it and since when
version_added: "1.0.0"
description:
  - O(state=acquired) creates the lock file O(path) on the controller, recording the user, host, the
    ansible-playbook pid, O(playbook) and the start time; when another live run holds it, fails with
    those. A lock left by a run that ended without releasing it (failed, interrupted) is taken over with
    a warning, on this host when its ansible-playbook pid no longer runs, from another host once older
    than O(stale_after) seconds.
  - O(state=released) removes the lock if this run holds it.
  - In check mode a held lock is still refused, but none is taken.
options:
  path:
    description: Lock file on the controller (on shared storage when several controllers deploy one cluster).
    type: path
    required: true
  state:
    description: C(acquired) or C(released).
    type: str
    default: acquired
    choices: [acquired, released]
  stale_after:
    description: Seconds after which a lock taken on another host counts as abandoned.
    type: int
    default: 43200
  playbook:
    description: Name of the playbook, recorded for the refusal message.
    type: str
attributes:
  check_mode:
    support: partial
    description: Refuses a held lock; takes none.
  action:
    support: full
    description: Runs on the controller as an action plugin.
author: vllm-pd-ansible developers
"""

EXAMPLES = r"""
- name: Refuse to run beside another site.yml run
  pd_run_lock:
    path: /srv/deploy/.cache/pd-run.lock
    playbook: site.yml
"""

RETURN = r"""
lock:
  description: What this run recorded in the lock file (user, host, pid, playbook, since).
  returned: when taken
  type: dict
holder:
  description: The run holding the lock, when refused.
  returned: failure
  type: dict
"""


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "state": {"type": "str", "default": "acquired", "choices": ["acquired", "released"]},
            "stale_after": {"type": "int", "default": 43200},
            "playbook": {"type": "str"},
        },
    )
    module.fail_json(msg="pd_run_lock runs as an action plugin on the controller; "
                         "this module file only holds its documentation")


if __name__ == "__main__":
    main()
