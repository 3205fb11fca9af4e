"""Ansible adapter: the plan as a text table (lib/pd_planner/table.py)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from pd_planner import plan_summary, plan_table

DOCUMENTATION = r"""
name: pd_plan_table
short_description: Render a pd_plan as an aligned text table
version_added: "1.0.0"
description:
  - The full table (C(view=full)) - instances (role, kv rank, host, node
    role, devices, parallelism, URL and ports), capacity per GPU, router,
    scrape jobs, IMEX domains and warnings - as written to
    C(render_dir/plan.txt) by C(playbooks/render.yml) and printed with C(-v).
  - The summary (C(view=summary)) - one line per pool and a few totals,
    every line within 120 columns whatever the cluster's size - as every
    run prints it.
options:
  _input:
    description: A plan returned by the C(pd_plan) filter.
    type: dict
    required: true
  view:
    description: C(full) or C(summary).
    type: str
    default: full
    choices: [full, summary]
"""

EXAMPLES = r"""
- name: Show the plan
  ansible.builtin.debug:
    msg: "{{ (pd_plan | pd_plan_table).split('\n') }}"
"""

RETURN = r"""
_value:
  description: The table, lines separated by newlines.
  type: str
"""


def pd_plan_table(plan, view="full"):
    if view == "summary":
        return plan_summary(plan)
    if view == "full":
        return plan_table(plan)
    raise AnsibleFilterError(f"pd_plan_table: view must be full or summary, not {view!r}")


class FilterModule:
    def filters(self):
        return {"pd_plan_table": pd_plan_table}
