"""Ansible adapter for the pure-Python planner in lib/pd_planner."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible.utils.display import Display
from pd_planner import PlanError, build_plan
from pd_planner.inventory import spec_from_inventory
from pd_planner.values import plain as _plain

DOCUMENTATION = r"""
name: pd_plan
short_description: Plan a vLLM prefill/decode cluster from the inventory
version_added: "1.0.0"
description:
  - Reads the groups C(prefill), C(decode), C(router) and C(monitoring) and
    the C(pd_*) variables of their hosts, and returns the deployment plan
    (instances with kv ranks, GPUs, ports, addresses, serve_args and env;
    router args; scrape targets; IMEX domains).
  - Deterministic and pure; bad input fails with a message naming the
    group, host or variable and what would be valid.
  - Each of the plan's warnings is shown as an Ansible warning.
options:
  _input:
    description: The C(groups) magic variable.
    type: dict
    required: true
  hostvars:
    description: The C(hostvars) magic variable.
    type: dict
    required: true
  errors:
    description:
      - C(strict) fails the task on bad input. C(return) returns a dict
        whose only key C(error) holds the planner's message instead, so the
        pd_plan role can print the message once and stop.
    type: str
    default: strict
    choices: [strict, return]
"""

EXAMPLES = r"""
- name: Compute the plan once
  ansible.builtin.set_fact:
    pd_plan: "{{ groups | pd_plan(hostvars) }}"
"""

RETURN = r"""
_value:
  description: The plan; see docs/plan.md for every key.
  type: dict
"""


class _HostvarsReader:
    """Read one variable of one host, plain-typed; missing is None."""

    def __init__(self, hostvars):
        self._hostvars = hostvars

    def __call__(self, host: str, name: str):
        try:
            host_vars = self._hostvars[host]
        except KeyError:
            return None
        if name == "fact_addresses":
            facts = host_vars.get("ansible_facts") or {}
            return _plain(facts.get("all_ipv4_addresses") or [])
        return _plain(host_vars.get(name))

    def names(self, host: str) -> list[str]:
        """Every variable name the host has (the planner refuses unknown pd_* ones)."""
        try:
            return [str(name) for name in self._hostvars[host]]
        except KeyError:
            return []


def pd_plan(groups, hostvars, errors="strict"):
    try:
        spec = spec_from_inventory(_plain(groups), _HostvarsReader(hostvars))
        plan = build_plan(spec)
    except PlanError as exc:
        if errors == "return":
            return {"error": str(exc)}
        raise AnsibleFilterError(f"pd_plan: {exc}") from None
    for warning in plan["warnings"]:
        Display().warning(f"pd_plan: {warning}")
    return plan


class FilterModule:
    def filters(self):
        return {"pd_plan": pd_plan}
