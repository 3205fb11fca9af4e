"""Helpers shared by bench/, the tests and the molecule scenarios: the
inventory shapes the planner benchmark and unit tests plan (specs) and the
load generator of the serving benchmarks and the scale test (loadgen).

Installed with pd_planner by `pip install -e .` (see pyproject.toml); never
needed on a managed node.
"""
