"""Pure-Python planner for vLLM prefill/decode disaggregated clusters.

No Ansible imports: the filter plugins in ../ are thin adapters, and the
unit tests import this package directly.
"""

from .errors import PlanError
from .planner import build_plan
from .table import plan_table

__all__ = ["PlanError", "build_plan", "plan_table"]
