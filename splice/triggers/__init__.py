"""Triggers that start flows: schedules, and the signatures and bodies of webhook deliveries."""

from splice.triggers.schedule import DEFAULT_GRACE, CatchUp, Schedule, ScheduleError

__all__ = ["DEFAULT_GRACE", "CatchUp", "Schedule", "ScheduleError"]
