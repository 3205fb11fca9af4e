"""The one exception the planner raises for bad input."""


class PlanError(ValueError):
    """Inventory input the planner cannot turn into a valid plan.

    The message names the group, host or variable at fault and says what
    would be valid; callers show it unchanged.
    """
