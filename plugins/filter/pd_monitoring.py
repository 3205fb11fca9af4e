"""Ansible adapter for lib/pd_planner/monitoring.py and dashboards.py."""

from __future__ import annotations

import os
import sys

_LIB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "lib")
if os.path.normpath(_LIB) not in sys.path:
    sys.path.insert(0, os.path.normpath(_LIB))

from pd_planner import dashboards, monitoring  # noqa: E402
from pd_planner.values import plain  # noqa: E402

DOCUMENTATION = r"""
name: pd_prometheus_config
short_description: prometheus.yml as data from the plan
version_added: "1.0.0"
description:
  - Every scrape job of the plan reads its targets from a file_sd file, so scaling rewrites targets,
    never this config. The same file holds C(pd_prometheus_file_sd) (job name to file_sd list),
    C(pd_prometheus_rule_files) (file name to rule groups, for plan numbers, recording rules and alerts)
    and C(pd_grafana_dashboards) (file name to dashboard JSON).
options:
  _input:
    description: The plan.
    type: dict
    required: true
  file_sd_dir:
    description: Directory of the file_sd files on the monitoring host.
    type: str
    required: true
  rules_dir:
    description: Directory of the rule files on the monitoring host.
    type: str
    required: true
  extra_scrape_configs:
    description: Scrape configs appended as given.
    type: list
    elements: dict
    default: []
"""

EXAMPLES = r"""
- name: Render prometheus.yml
  ansible.builtin.copy:
    content: >-
      {{ pd_plan | pd_prometheus_config('/etc/prometheus/file_sd', '/etc/prometheus/pd-rules')
         | to_nice_yaml }}
    dest: /etc/prometheus/prometheus.yml
    mode: "0644"
"""

RETURN = r"""
_value:
  description: The Prometheus configuration.
  type: dict
"""


def _config(plan, file_sd_dir, rules_dir, extra_scrape_configs=()):
    config = monitoring.prometheus_config(plain(plan), str(file_sd_dir), str(rules_dir))
    config["scrape_configs"] += plain(list(extra_scrape_configs or []))
    return config


class FilterModule:
    def filters(self):
        return {
            "pd_prometheus_config": _config,
            "pd_prometheus_file_sd": lambda plan: monitoring.file_sd(plain(plan)),
            "pd_prometheus_rule_files": lambda plan: monitoring.rule_files(plain(plan)),
            "pd_grafana_dashboards": lambda _plan=None: dashboards.dashboards(),
        }
