"""Ansible adapter for lib/pd_planner/monitoring.py and dashboards.py."""

from __future__ import annotations

from pd_planner import dashboards, monitoring
from pd_planner.values import plain

# Each filter of this file has its ansible-doc entry in plugins/filter/<filter name>.yml
# (ansible-doc reads that sidecar when the Python file holds no DOCUMENTATION).


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
