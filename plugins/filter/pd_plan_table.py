"""Ansible adapter: the plan as a text table (lib/pd_planner/table.py)."""

from __future__ import annotations

from pd_planner import plan_table

DOCUMENTATION = r"""
name: pd_plan_table
short_description: Render a pd_plan as an aligned text table
version_added: "1.0.0"
description:
  - Instances (role, kv rank, host, node role, devices, parallelism, URL and
    ports), capacity per GPU, router, scrape jobs, IMEX domains and warnings,
    as printed by C(playbooks/render.yml).
options:
  _input:
    description: A plan returned by the C(pd_plan) filter.
    type: dict
    required: true
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


def pd_plan_table(plan):
    return plan_table(plan)


class FilterModule:
    def filters(self):
        return {"pd_plan_table": pd_plan_table}
