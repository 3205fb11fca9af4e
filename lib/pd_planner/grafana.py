"""Grafana's dashboard JSON building blocks: the grid, panels, variables.

Plain data for Grafana's schema (version in dashboards.py); dashboards.py
composes the project's dashboards from these.
"""

from __future__ import annotations

DATASOURCE_UID = "pd-prometheus"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana units for numbers with a physical unit; a panel of plain counts
# ("short") names what it counts on its axis instead.
COUNT_UNIT = "short"


class Layout:
    """Panels on Grafana's 24-column grid, filled left to right."""

    def __init__(self) -> None:
        self.panels: list[dict] = []
        self.x = self.y = 0
        self.row_height = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append({"type": "row", "title": title, "collapsed": False, "panels": [],
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "id": len(self.panels) + 1})
        self.y += 1

    def _newline(self) -> None:
        if self.x:
            self.y += self.row_height
            self.x, self.row_height = 0, 0

    def add(self, panel: dict, width: int, height: int = 8) -> None:
        if self.x + width > 24:
            self._newline()
        panel["gridPos"] = {"h": height, "w": width, "x": self.x, "y": self.y}
        panel["id"] = len(self.panels) + 1
        self.panels.append(panel)
        self.x += width
        self.row_height = max(self.row_height, height)


def targets(queries: list[tuple[str, str]]) -> list[dict]:
    return [{"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + i)}
            for i, (expr, legend) in enumerate(queries)]


def field_defaults(unit: str, axis: str) -> dict:
    if unit == COUNT_UNIT and not axis:
        raise ValueError(f"a panel of plain counts names what it counts (axis): unit {unit!r}")
    return {"unit": unit, "custom": {"lineWidth": 1, "fillOpacity": 10, "axisLabel": axis}}


def timeseries(title: str, queries: list[tuple[str, str]], unit: str, description: str, *,
               axis: str = "", stacked: bool = False, links: list[dict] | None = None) -> dict:
    """One unit per panel: what differs in unit goes in another panel."""
    defaults = field_defaults(unit, axis)
    if stacked:
        defaults["custom"]["stacking"] = {"mode": "normal", "group": "A"}
        defaults["custom"]["fillOpacity"] = 40
    if links:
        defaults["links"] = links
    return {
        "type": "timeseries", "title": title, "description": description, "datasource": DATASOURCE,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                    "tooltip": {"mode": "multi"}},
        "targets": targets(queries),
    }


def stat(title: str, queries: list[tuple[str, str]], unit: str, description: str, *, axis: str = "",
         thresholds: list[tuple[float | None, str]] | None = None) -> dict:
    steps = [{"value": v, "color": c} for v, c in (thresholds or [(None, "green")])]
    defaults = field_defaults(unit, axis)
    defaults["thresholds"] = {"mode": "absolute", "steps": steps}
    return {
        "type": "stat", "title": title, "description": description, "datasource": DATASOURCE,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "value", "graphMode": "area", "textMode": "auto"},
        "targets": targets(queries),
    }


def variable_datasource() -> dict:
    return {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
            "current": {"text": "Prometheus", "value": DATASOURCE_UID}, "hide": 0}


def variable_query(name: str, label: str, query: str) -> dict:
    return {"name": name, "label": label, "type": "query", "datasource": DATASOURCE,
            "query": {"query": query, "refId": f"{name}-values"}, "definition": query,
            "refresh": 2, "includeAll": True, "multi": True, "allValue": ".+",
            "current": {"text": "All", "value": "$__all"}, "sort": 1, "hide": 0}
