"""Ansible adapter for lib/pd_planner/firewall.py (a host's firewall rules from the plan)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from pd_planner import PlanError, firewall
from pd_planner.values import plain

# Its ansible-doc entry is plugins/filter/pd_firewall_rules.yml.


def _rules(plan, host, admin_networks, client_networks, extra=()):
    try:
        return firewall.host_rules(plain(plan), str(host), plain(admin_networks), plain(client_networks),
                                   plain(list(extra or [])))
    except PlanError as exc:
        raise AnsibleFilterError(str(exc)) from exc


class FilterModule:
    def filters(self):
        return {"pd_firewall_rules": _rules}
