#!/usr/bin/python
"""Documentation of the pd_files action (plugins/action/pd_files.py).

ansible-doc finds module docs only in a module file; the work is done by the
action plugin of the same name on the controller, so this module never runs
on a node (like ansible.builtin.debug's module file).
"""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: pd_files
short_description: Write the files a role computed, on a host or under a local render root
description:
  - Takes the files of a role as data. With O(root) empty each file is written on the
    host by M(ansible.builtin.template) (C(template)) or M(ansible.builtin.copy)
    (C(content)); check mode, diff, validate and changed reporting are theirs.
  - On the host, one command first reads the mode, owner, group and SHA-1 of every
    file (C(stat) and C(sha1sum)); a file that already matches what the task would
    write is reported unchanged without a module run of its own, so a rerun that
    changes nothing costs one round trip per task instead of one per file.
  - With O(root) set, the files are templated on the controller and written under
    O(root) in this process (owner, group and validate are not applied there), the
    directories created as needed. playbooks/render.yml uses this.
options:
  root:
    description: Render directory prefixed to every dest; empty writes on the host.
    type: str
    default: ""
  files:
    description:
      - The files. Each has C(dest) (absolute path on the host), one of C(template)
        (a template of the role, rendered with the task's variables plus C(vars)) or
        C(content), and C(mode); optionally C(owner), C(group), C(validate), C(vars)
        and C(label) (returned with the file's result).
    type: list
    elements: dict
    required: true
version_added: "1.0.0"
author: vllm-pd-ansible contributors
"""

EXAMPLES = r"""
- name: Write the worker units and env files of this host (root / on a host, render_dir/<host> in render.yml)
  pd_files:
    root: ""
    files:
      - dest: /etc/vllm/vllm-prefill-0.env
        template: vllm-worker.env.j2
        mode: "0640"
        owner: root
        group: vllm
        label: vllm-prefill-0
"""

RETURN = r"""
results:
  description: One entry per file, in order, with dest, label and changed.
  returned: always
  type: list
  elements: dict
changed_labels:
  description: The labels of the files that changed (or would change in check mode), once each.
  returned: always
  type: list
  elements: str
"""



def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "root": {"type": "str", "default": ""},
            "files": {"type": "list", "elements": "dict", "required": True},
        },
    )
    module.fail_json(msg="pd_files runs as an action plugin on the controller; "
                         "this file only documents it")


if __name__ == "__main__":
    main()
