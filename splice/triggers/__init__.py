"""Triggers that start flows. Webhook and manual triggers live with the API and the CLI."""

from splice.triggers.schedule import DEFAULT_GRACE, CatchUp, Schedule, ScheduleError

__all__ = ["DEFAULT_GRACE", "CatchUp", "Schedule", "ScheduleError"]
