"""Schedule triggers: five-field cron evaluated on the wall clock of an IANA time zone.

A cron matches local wall-clock times. Each matching wall-clock time fires once, at one
instant, by these rules:

* A time that exists once fires at that instant.
* A time inside a repeated hour (clocks set back) fires at its first occurrence, the one
  with ``fold=0``. The second pass through that hour fires nothing.
* A time inside a skipped hour (clocks set forward) fires at the first valid instant after
  the gap: 02:30 in a zone that jumps from 02:00 to 03:00 fires at 03:00 local time. Several
  times in one gap (``*/15``) and the time at the end of the gap (03:00) fire once together.

So a daily job runs every day and never twice on one day, and interval jobs neither fire
twice across a repeated hour nor skip across a gap.

NOTE: given aware datetimes, cronsim 2.9 follows Debian cron: a cron whose minute or hour
field starts with ``*`` fires on both passes of a repeated hour, so ``0 * * * *`` fires
twice where ``0 0-23 * * *`` fires once. This module therefore gives cronsim naive
wall-clock times only and maps them to instants itself.

Every function here takes the current time as an argument and reads no clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from splice.definition.model import _CRON_FIELDS, _cron_field_valid, _cron_value
from splice.errors import SpliceError

CatchUp = Literal["skip", "once"]

# A due time at most this old is on time under ``catch_up="skip"``: a scheduler that wakes up
# late by less than cron's one-minute resolution has not missed it.
DEFAULT_GRACE = timedelta(minutes=1)

_CATCH_UP_VALUES = ("skip", "once")
_ONE_SECOND = timedelta(seconds=1)


class ScheduleError(SpliceError, ValueError):
    """A schedule's cron or time zone is invalid; ``field`` names the cron field at fault."""

    def __init__(
        self, message: str, *, cron: str, timezone: str, field: str | None = None, fix: str
    ) -> None:
        self.cron = cron
        self.timezone = timezone
        self.field = field
        self.fix = fix
        super().__init__(f"schedule {cron!r} in {timezone}: {message}; {fix}")


class Schedule:
    """A cron expression in a time zone, parsed and checked once."""

    def __init__(self, cron: str, timezone: str = "UTC") -> None:
        self.cron = cron
        self.timezone = timezone
        self.zone = _load_zone(cron, timezone)
        _check_cron(cron, timezone)
        # NOTE: cronsim takes the start time in its constructor, so every query parses the
        # cron again. This call only rejects what cronsim rejects beyond the field syntax.
        _build_cronsim(cron, timezone)

    def __repr__(self) -> str:
        return f"Schedule({self.cron!r}, {self.timezone!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Schedule):
            return NotImplemented
        return (self.cron, self.timezone) == (other.cron, other.timezone)

    def __hash__(self) -> int:
        return hash((self.cron, self.timezone))

    def next_after(self, after: datetime) -> datetime:
        """Return the first due time strictly after ``after``, as an aware UTC datetime."""
        for due in self._due_times_after(after):
            return due
        raise ScheduleError(
            f"no due time within 50 years after {after.isoformat()}",
            cron=self.cron,
            timezone=self.timezone,
            fix="check the day and month fields",
        )

    def next_fire_times(self, after: datetime, limit: int) -> list[datetime]:
        """Return the next ``limit`` due times strictly after ``after``, oldest first, in UTC."""
        if limit < 0:
            raise ValueError(f"limit {limit} is negative; pass 0 or more")
        return list(islice(self._due_times_after(after), limit))

    def latest_at_or_before(self, moment: datetime) -> datetime | None:
        """Return the last due time at or before ``moment`` in UTC.

        Returns None when no due time falls in the 50 years before ``moment``, the span that
        cronsim searches.
        """
        moment = _as_utc(moment)
        # In the second pass of a repeated hour, later wall-clock times of that hour fired on
        # the first pass, so the search starts a repeat later and skips instants after ``moment``.
        local = moment.astimezone(self.zone)
        end = local.replace(tzinfo=None) + _repeat_length(local)
        start = end.replace(microsecond=0) + _ONE_SECOND  # cronsim steps back one second first
        try:
            for wall in CronSim(self.cron, start, reverse=True):
                due = self._instant(wall)
                if due <= moment:
                    return due
        except StopIteration:
            return None
        return None

    def due_times(
        self,
        last_fired: datetime | None,
        now: datetime,
        catch_up: CatchUp = "skip",
        *,
        grace: timedelta = DEFAULT_GRACE,
    ) -> list[datetime]:
        """Return the due times a scheduler fires at ``now``: none or one, in UTC.

        ``last_fired`` is the due time of the last run (not when it started), or None when
        the schedule has never fired, which fires nothing before its next due time. Of the due
        times after ``last_fired`` and at or before ``now``, ``skip`` fires the latest one
        only if it is at most ``grace`` old, and ``once`` fires the latest one however old.
        """
        if catch_up not in _CATCH_UP_VALUES:
            raise ValueError(f"catch_up {catch_up!r} is invalid; use 'skip' or 'once'")
        now = _as_utc(now)
        latest = self.latest_at_or_before(now)
        if last_fired is None or latest is None or latest <= _as_utc(last_fired):
            return []
        if catch_up == "skip" and now - latest > grace:
            return []
        return [latest]

    def _due_times_after(self, after: datetime) -> Iterator[datetime]:
        """Yield due times strictly after ``after`` in UTC, each instant once."""
        after = _as_utc(after)
        wall = after.astimezone(self.zone).replace(tzinfo=None)
        previous = after
        try:
            for match in CronSim(self.cron, wall):
                due = self._instant(match)
                # Matches in the second pass of a repeated hour map to instants at or before
                # ``after``, and several matches inside one gap map to the same instant.
                if due > previous:
                    previous = due
                    yield due
        except StopIteration:
            return  # cronsim found no match within 50 years

    def _instant(self, wall: datetime) -> datetime:
        """Map a naive wall-clock time in the zone to the UTC instant at which it fires."""
        first = wall.replace(tzinfo=self.zone, fold=0)
        second = wall.replace(tzinfo=self.zone, fold=1)
        first_offset, second_offset = first.utcoffset(), second.utcoffset()
        assert first_offset is not None and second_offset is not None  # a ZoneInfo always has one
        if first_offset >= second_offset:
            return first.astimezone(UTC)  # exists once, or the first pass of a repeated hour
        return _gap_end(second.astimezone(UTC), first.astimezone(UTC), self.zone)


def _gap_end(earlier: datetime, later: datetime, zone: ZoneInfo) -> datetime:
    """Find, to the second, the UTC instant of the transition between two instants around it.

    Clocks show the offset before the transition at ``earlier`` and the one after at ``later``.
    """
    offset_after = later.astimezone(zone).utcoffset()
    low, high = earlier, later
    while high - low > _ONE_SECOND:
        middle = low + (high - low) / 2
        middle = middle.replace(microsecond=0)
        if middle.astimezone(zone).utcoffset() == offset_after:
            high = middle
        else:
            low = middle
    return high


def _repeat_length(local: datetime) -> timedelta:
    """Return how long the clock repeats at ``local``'s wall-clock time, zero if it does not."""
    first_offset = local.replace(fold=0).utcoffset()
    second_offset = local.replace(fold=1).utcoffset()
    assert first_offset is not None and second_offset is not None
    return max(first_offset - second_offset, timedelta(0))


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(
            f"datetime {moment.isoformat()} is naive; pass an aware datetime such as "
            "datetime.now(UTC)"
        )
    return moment.astimezone(UTC)


def _load_zone(cron: str, timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            "the time zone is unknown",
            cron=cron,
            timezone=timezone,
            fix="use an IANA name such as 'Europe/Berlin' or 'UTC'",
        ) from None


def _check_cron(cron: str, timezone: str) -> None:
    """Check the cron with the definition model's rules, plus ranges that run backwards."""
    if "{{" in cron:
        raise ScheduleError(
            "the cron is an expression that has not been resolved",
            cron=cron,
            timezone=timezone,
            fix="evaluate it with the instance's config values before building the Schedule",
        )
    fields = cron.split()
    if len(fields) != 5:
        raise ScheduleError(
            f"the cron has {len(fields)} fields instead of five",
            cron=cron,
            timezone=timezone,
            fix="write minute hour day month weekday, such as '0 6 * * 1-5'",
        )
    for text, (name, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        _check_field(cron, timezone, text, name, low, high, names)


def _check_field(
    cron: str, timezone: str, text: str, name: str, low: int, high: int, names: tuple[str, ...]
) -> None:
    if not _cron_field_valid(text, low, high, names):
        raise ScheduleError(
            f"the {name} field {text!r} is invalid",
            cron=cron,
            timezone=timezone,
            field=name,
            fix=f"use *, numbers from {low} to {high}, ranges (a-b), lists (a,b) and steps (*/n)",
        )
    for part in text.split(","):
        start, dash, end = part.partition("/")[0].partition("-")
        if not dash:
            continue
        # The field syntax passed, so both bounds are numbers or names.
        first, last = _cron_value(start, low, names) or 0, _cron_value(end, low, names) or 0
        if first > last:
            raise ScheduleError(
                f"the {name} field {text!r} has the range {start}-{end}, which runs backwards",
                cron=cron,
                timezone=timezone,
                field=name,
                fix="write the lower bound first, or a list such as 5,6,0 for a range that wraps",
            )


def _build_cronsim(cron: str, timezone: str) -> CronSim:
    try:
        return CronSim(cron, datetime(2000, 1, 1))
    except CronSimError:
        # The field syntax passed, so cronsim rejects a day of the month that no listed month has.
        raise ScheduleError(
            "the cron never fires because no month in its month field has that day",
            cron=cron,
            timezone=timezone,
            field="day",
            fix="choose days that exist in the listed months (February has at most 29)",
        ) from None
