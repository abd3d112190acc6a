"""Triggers that start flows: schedules, and the signatures and bodies of webhook deliveries."""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from splice.triggers.schedule import DEFAULT_GRACE, CatchUp, Schedule, ScheduleError

__all__ = ["DEFAULT_GRACE", "CatchUp", "Schedule", "ScheduleError"]


def __getattr__(name: str) -> Any:
    # Loaded on first use: the definition model imports splice.triggers.signatures, and
    # the schedule module imports the model, so loading it here would be circular.
    if name in __all__:
        from splice.triggers import schedule

        return getattr(schedule, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
