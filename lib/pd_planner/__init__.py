"""Pure-Python planner for vLLM prefill/decode disaggregated clusters.

No Ansible imports: the filter plugins in plugins/filter are thin adapters,
and the unit tests import this package directly.

Installed like any library: `pip install -r requirements.txt` from the
repository root (its `-e .` line; `make venv` does it for development)
installs this package editable from lib/ into the controller's Python, where
Ansible runs the filter plugins. Only the controller needs it; no managed
node imports it.
"""

from .build import build_plan
from .errors import PlanError
from .table import plan_summary, plan_table

__all__ = ["PlanError", "build_plan", "plan_summary", "plan_table"]
