"""Schedule: cron on a zone's wall clock, daylight-saving transitions, catch-up and errors.

Expected times are local ISO strings with their UTC offset, so a failure shows which pass
of a repeated hour, or which side of a gap, a due time fell on.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from splice.definition import ScheduleTrigger
from splice.triggers import Schedule, ScheduleError


def local_times(schedule: Schedule, times: list[datetime]) -> list[str]:
    """Format UTC instants as local ISO strings, to the minute, in the schedule's zone."""
    return [time.astimezone(schedule.zone).isoformat(timespec="minutes") for time in times]


def next_local(cron: str, zone: str, after: str, limit: int) -> list[str]:
    """Return the next ``limit`` due times of a schedule after a local ISO time."""
    schedule = Schedule(cron, zone)
    return local_times(schedule, schedule.next_fire_times(datetime.fromisoformat(after), limit))


# Clocks go forward: Berlin 2024-03-31 02:00 to 03:00, New York 2024-03-10 02:00 to 03:00,
# Sydney 2024-10-06 02:00 to 03:00, Lord Howe Island 2024-10-06 02:00 to 02:30.
SPRING_CASES = [
    pytest.param(
        "Europe/Berlin",
        "30 2 * * *",
        "2024-03-29T12:00+01:00",
        ["2024-03-30T02:30+01:00", "2024-03-31T03:00+02:00", "2024-04-01T02:30+02:00"],
        id="berlin-daily-0230",
    ),
    pytest.param(
        "Europe/Berlin",
        "0 * * * *",
        "2024-03-31T00:30+01:00",
        ["2024-03-31T01:00+01:00", "2024-03-31T03:00+02:00", "2024-03-31T04:00+02:00"],
        id="berlin-hourly",
    ),
    pytest.param(
        "Europe/Berlin",
        "*/15 * * * *",
        "2024-03-31T01:30+01:00",
        ["2024-03-31T01:45+01:00", "2024-03-31T03:00+02:00", "2024-03-31T03:15+02:00"],
        id="berlin-every-15-minutes",
    ),
    pytest.param(
        "America/New_York",
        "30 2 * * *",
        "2024-03-08T12:00-05:00",
        ["2024-03-09T02:30-05:00", "2024-03-10T03:00-04:00", "2024-03-11T02:30-04:00"],
        id="new-york-daily-0230",
    ),
    pytest.param(
        "America/New_York",
        "0 * * * *",
        "2024-03-10T00:30-05:00",
        ["2024-03-10T01:00-05:00", "2024-03-10T03:00-04:00", "2024-03-10T04:00-04:00"],
        id="new-york-hourly",
    ),
    pytest.param(
        "America/New_York",
        "*/15 * * * *",
        "2024-03-10T01:30-05:00",
        ["2024-03-10T01:45-05:00", "2024-03-10T03:00-04:00", "2024-03-10T03:15-04:00"],
        id="new-york-every-15-minutes",
    ),
    pytest.param(
        "Australia/Sydney",
        "30 2 * * *",
        "2024-10-04T12:00+10:00",
        ["2024-10-05T02:30+10:00", "2024-10-06T03:00+11:00", "2024-10-07T02:30+11:00"],
        id="sydney-daily-0230",
    ),
    pytest.param(
        "Australia/Sydney",
        "0 * * * *",
        "2024-10-06T00:30+10:00",
        ["2024-10-06T01:00+10:00", "2024-10-06T03:00+11:00", "2024-10-06T04:00+11:00"],
        id="sydney-hourly",
    ),
    pytest.param(
        "Australia/Sydney",
        "*/15 * * * *",
        "2024-10-06T01:30+10:00",
        ["2024-10-06T01:45+10:00", "2024-10-06T03:00+11:00", "2024-10-06T03:15+11:00"],
        id="sydney-every-15-minutes",
    ),
    pytest.param(
        "Australia/Lord_Howe",
        "15 2 * * *",
        "2024-10-04T12:00+10:30",
        ["2024-10-05T02:15+10:30", "2024-10-06T02:30+11:00", "2024-10-07T02:15+11:00"],
        id="lord-howe-daily-0215",
    ),
    pytest.param(
        "Australia/Lord_Howe",
        "0 * * * *",
        "2024-10-06T00:30+10:30",
        ["2024-10-06T01:00+10:30", "2024-10-06T02:30+11:00", "2024-10-06T03:00+11:00"],
        id="lord-howe-hourly",
    ),
    pytest.param(
        "Australia/Lord_Howe",
        "*/15 * * * *",
        "2024-10-06T01:30+10:30",
        ["2024-10-06T01:45+10:30", "2024-10-06T02:30+11:00", "2024-10-06T02:45+11:00"],
        id="lord-howe-every-15-minutes",
    ),
]

# Clocks go back: Berlin 2024-10-27 03:00 to 02:00, New York 2024-11-03 02:00 to 01:00,
# Sydney 2024-04-07 03:00 to 02:00, Lord Howe Island 2024-04-07 02:00 to 01:30.
AUTUMN_CASES = [
    pytest.param(
        "Europe/Berlin",
        "30 2 * * *",
        "2024-10-26T12:00+02:00",
        ["2024-10-27T02:30+02:00", "2024-10-28T02:30+01:00"],
        id="berlin-daily-0230",
    ),
    pytest.param(
        "Europe/Berlin",
        "0 * * * *",
        "2024-10-27T00:30+02:00",
        ["2024-10-27T01:00+02:00", "2024-10-27T02:00+02:00", "2024-10-27T03:00+01:00"],
        id="berlin-hourly",
    ),
    pytest.param(
        "Europe/Berlin",
        "*/15 * * * *",
        "2024-10-27T02:30+02:00",
        ["2024-10-27T02:45+02:00", "2024-10-27T03:00+01:00", "2024-10-27T03:15+01:00"],
        id="berlin-every-15-minutes",
    ),
    pytest.param(
        "Europe/Berlin",
        "30 1 * * *",
        "2024-10-26T12:00+02:00",
        ["2024-10-27T01:30+02:00", "2024-10-28T01:30+01:00"],
        id="berlin-daily-0130",
    ),
    pytest.param(
        "America/New_York",
        "30 1 * * *",
        "2024-11-02T12:00-04:00",
        ["2024-11-03T01:30-04:00", "2024-11-04T01:30-05:00"],
        id="new-york-daily-0130",
    ),
    pytest.param(
        "America/New_York",
        "0 * * * *",
        "2024-11-03T00:30-04:00",
        ["2024-11-03T01:00-04:00", "2024-11-03T02:00-05:00", "2024-11-03T03:00-05:00"],
        id="new-york-hourly",
    ),
    pytest.param(
        "America/New_York",
        "*/15 * * * *",
        "2024-11-03T01:30-04:00",
        ["2024-11-03T01:45-04:00", "2024-11-03T02:00-05:00", "2024-11-03T02:15-05:00"],
        id="new-york-every-15-minutes",
    ),
    pytest.param(
        "Australia/Sydney",
        "30 2 * * *",
        "2024-04-06T12:00+11:00",
        ["2024-04-07T02:30+11:00", "2024-04-08T02:30+10:00"],
        id="sydney-daily-0230",
    ),
    pytest.param(
        "Australia/Sydney",
        "30 1 * * *",
        "2024-04-06T12:00+11:00",
        ["2024-04-07T01:30+11:00", "2024-04-08T01:30+10:00"],
        id="sydney-daily-0130",
    ),
    pytest.param(
        "Australia/Sydney",
        "0 * * * *",
        "2024-04-07T00:30+11:00",
        ["2024-04-07T01:00+11:00", "2024-04-07T02:00+11:00", "2024-04-07T03:00+10:00"],
        id="sydney-hourly",
    ),
    pytest.param(
        "Australia/Sydney",
        "*/15 * * * *",
        "2024-04-07T02:30+11:00",
        ["2024-04-07T02:45+11:00", "2024-04-07T03:00+10:00", "2024-04-07T03:15+10:00"],
        id="sydney-every-15-minutes",
    ),
    pytest.param(
        "Australia/Lord_Howe",
        "30 1 * * *",
        "2024-04-06T12:00+11:00",
        ["2024-04-07T01:30+11:00", "2024-04-08T01:30+10:30"],
        id="lord-howe-daily-0130",
    ),
    pytest.param(
        "Australia/Lord_Howe",
        "*/15 * * * *",
        "2024-04-07T01:20+11:00",
        ["2024-04-07T01:30+11:00", "2024-04-07T01:45+11:00", "2024-04-07T02:00+10:30"],
        id="lord-howe-every-15-minutes",
    ),
]


@pytest.mark.parametrize(("zone", "cron", "after", "expected"), SPRING_CASES)
def test_spring_forward(zone: str, cron: str, after: str, expected: list[str]) -> None:
    """Times in the skipped hour fire once at the end of the gap, and no day is skipped."""
    assert expected == next_local(cron, zone, after, len(expected))


@pytest.mark.parametrize(("zone", "cron", "after", "expected"), AUTUMN_CASES)
def test_fall_back(zone: str, cron: str, after: str, expected: list[str]) -> None:
    """Times in the repeated hour fire once, on the first pass, and no day runs twice."""
    assert expected == next_local(cron, zone, after, len(expected))


def test_after_inside_second_pass() -> None:
    """Starting in the second pass of a repeated hour fires nothing more in that hour."""
    expected = ["2024-10-27T03:00+01:00", "2024-10-27T03:15+01:00"]

    assert expected == next_local("*/15 * * * *", "Europe/Berlin", "2024-10-27T02:10+01:00", 2)


def test_hour_range_across_fall_back() -> None:
    """An hour range fires each wall-clock hour once, as ``*`` does."""
    expected = ["2024-11-03T01:00-04:00", "2024-11-03T02:00-05:00", "2024-11-03T03:00-05:00"]

    assert expected == next_local("0 0-23 * * *", "America/New_York", "2024-11-03T00:30-04:00", 3)


def test_midnight_gap_keeps_day() -> None:
    """A daily midnight job fires at 01:00 where the clock jumps from midnight to 01:00."""
    # America/Santiago moved its clocks from 2024-09-08 00:00 (-04:00) to 01:00 (-03:00).
    expected = ["2024-09-07T00:00-04:00", "2024-09-08T01:00-03:00", "2024-09-09T00:00-03:00"]

    assert expected == next_local("0 0 * * *", "America/Santiago", "2024-09-06T12:00-04:00", 3)


def test_results_are_utc() -> None:
    """Due times are aware datetimes in UTC, whatever the zone and the input's zone."""
    schedule = Schedule("0 6 * * *", "Europe/Berlin")

    due = schedule.next_after(datetime.fromisoformat("2024-06-01T12:00+09:00"))

    assert UTC == due.tzinfo
    assert datetime(2024, 6, 1, 4, 0, tzinfo=UTC) == due


def test_next_after_is_strict() -> None:
    """A due time equal to ``after`` is not returned again."""
    schedule = Schedule("0 6 * * *", "UTC")
    due = datetime(2024, 6, 1, 6, 0, tzinfo=UTC)

    assert datetime(2024, 6, 2, 6, 0, tzinfo=UTC) == schedule.next_after(due)


def test_next_after_matches_first_fire_time() -> None:
    """``next_after`` returns the first of ``next_fire_times``."""
    schedule = Schedule("*/15 * * * *", "Europe/Berlin")
    after = datetime(2024, 3, 31, 0, 50, tzinfo=UTC)

    assert schedule.next_fire_times(after, 1) == [schedule.next_after(after)]


def test_naive_datetime_rejected() -> None:
    """A naive ``after`` raises, because its instant is unknown."""
    schedule = Schedule("0 6 * * *", "UTC")

    with pytest.raises(ValueError, match="is naive; pass an aware datetime"):
        schedule.next_after(datetime(2024, 6, 1, 12, 0))


def test_weekday_range() -> None:
    """``1-5`` and ``mon-fri`` fire Monday to Friday and skip the weekend."""
    friday_noon = "2024-06-07T12:00+02:00"
    expected = ["2024-06-10T06:00+02:00", "2024-06-11T06:00+02:00"]

    assert expected == next_local("0 6 * * 1-5", "Europe/Berlin", friday_noon, 2)
    assert expected == next_local("0 6 * * mon-fri", "Europe/Berlin", friday_noon, 2)


def test_sunday_is_zero_and_seven() -> None:
    """Weekday 0 and weekday 7 both mean Sunday."""
    expected = ["2024-06-09T06:00+00:00"]

    assert expected == next_local("0 6 * * 0", "UTC", "2024-06-07T12:00+00:00", 1)
    assert expected == next_local("0 6 * * 7", "UTC", "2024-06-07T12:00+00:00", 1)


def test_month_field() -> None:
    """A month list fires only in those months."""
    expected = ["2024-07-01T00:00+02:00", "2025-01-01T00:00+01:00"]

    assert expected == next_local("0 0 1 jan,jul *", "Europe/Berlin", "2024-02-01T00:00+01:00", 2)


def test_day_fields_either_matches() -> None:
    """With both day fields restricted, a day matching either one fires."""
    # The 13th of each month, or any Friday: June 2024 has Fridays on the 7th, 14th, 21st.
    expected = ["2024-06-07T00:00+00:00", "2024-06-13T00:00+00:00", "2024-06-14T00:00+00:00"]

    assert expected == next_local("0 0 13 * 5", "UTC", "2024-06-01T00:00+00:00", 3)


def test_first_week_or_monday() -> None:
    """``1-7`` with weekday 1 means days 1 to 7 or any Monday, not the first Monday."""
    actual = next_local("0 0 1-7 * 1", "UTC", "2024-06-30T12:00+00:00", 9)

    assert [f"2024-07-0{day}T00:00+00:00" for day in range(1, 8)] == actual[:7]
    assert ["2024-07-08T00:00+00:00", "2024-07-15T00:00+00:00"] == actual[7:]


def test_star_step_day_means_both() -> None:
    """A day field starting with ``*``, such as ``*/2``, must match together with the weekday."""
    # Odd days of the month that are also Mondays: July 2024 has Mondays on 1, 8, 15, 22, 29.
    expected = ["2024-07-01T00:00+00:00", "2024-07-15T00:00+00:00", "2024-07-29T00:00+00:00"]

    assert expected == next_local("0 0 */2 * 1", "UTC", "2024-06-30T12:00+00:00", 3)


def test_value_with_step() -> None:
    """``a/n`` starts at a and steps by n up to the field's maximum."""
    expected = ["2024-06-01T00:05+00:00", "2024-06-01T00:25+00:00", "2024-06-01T00:45+00:00"]

    assert expected == next_local("5/20 * * * *", "UTC", "2024-06-01T00:00+00:00", 3)


def test_latest_in_second_pass() -> None:
    """In the second pass of a repeated hour, the latest due time is the first pass's last."""
    schedule = Schedule("*/15 * * * *", "Europe/Berlin")

    latest = schedule.latest_at_or_before(datetime.fromisoformat("2024-10-27T02:20+01:00"))

    assert ["2024-10-27T02:45+02:00"] == local_times(schedule, [latest] if latest else [])


def test_latest_after_gap() -> None:
    """After a gap, the latest due time of an hourly job is the end of the gap."""
    schedule = Schedule("0 * * * *", "Europe/Berlin")

    latest = schedule.latest_at_or_before(datetime.fromisoformat("2024-03-31T03:30+02:00"))

    assert ["2024-03-31T03:00+02:00"] == local_times(schedule, [latest] if latest else [])


def test_latest_includes_moment() -> None:
    """A due time equal to the moment is the latest one."""
    schedule = Schedule("0 6 * * *", "UTC")
    due = datetime(2024, 6, 1, 6, 0, tzinfo=UTC)

    assert due == schedule.latest_at_or_before(due)


HOURLY = Schedule("0 * * * *", "Europe/Berlin")
NOON = datetime(2024, 6, 1, 10, 0, tzinfo=UTC)  # 12:00 in Berlin


def test_skip_fires_on_time() -> None:
    """With skip, the due time just reached fires."""
    last_fired = NOON - timedelta(hours=1)

    assert [NOON] == HOURLY.due_times(last_fired, NOON + timedelta(seconds=5), "skip")


def test_skip_drops_downtime() -> None:
    """With skip, due times missed by more than the grace fire nothing."""
    last_fired = NOON - timedelta(hours=5)

    assert [] == HOURLY.due_times(last_fired, NOON + timedelta(minutes=20), "skip")


def test_skip_grace_boundary() -> None:
    """With skip, a due time exactly ``grace`` old still fires and one a second older does not."""
    last_fired = NOON - timedelta(hours=1)
    grace = timedelta(minutes=5)

    assert [NOON] == HOURLY.due_times(last_fired, NOON + grace, "skip", grace=grace)
    assert [] == HOURLY.due_times(
        last_fired, NOON + grace + timedelta(seconds=1), "skip", grace=grace
    )


def test_once_fires_latest_missed() -> None:
    """With once, five missed due times fire as one run, at the latest of them."""
    last_fired = NOON - timedelta(hours=5)

    assert [NOON] == HOURLY.due_times(last_fired, NOON + timedelta(minutes=20), "once")


def test_once_nothing_missed() -> None:
    """With once, nothing fires before the next due time."""
    last_fired = NOON

    assert [] == HOURLY.due_times(last_fired, NOON + timedelta(minutes=59), "once")


def test_never_fired_waits() -> None:
    """A schedule that has never fired fires nothing until its next due time."""
    assert [] == HOURLY.due_times(None, NOON + timedelta(seconds=5), "once")


def test_once_across_second_pass() -> None:
    """With once, downtime ending in a repeated hour fires the first pass's latest due time."""
    schedule = Schedule("*/15 * * * *", "Europe/Berlin")
    last_fired = datetime.fromisoformat("2024-10-27T01:45+02:00")
    now = datetime.fromisoformat("2024-10-27T02:20+01:00")

    actual = schedule.due_times(last_fired, now, "once")

    assert ["2024-10-27T02:45+02:00"] == local_times(schedule, actual)


def test_already_fired_in_second_pass() -> None:
    """A due time fired on the first pass does not fire again during the second pass."""
    schedule = Schedule("*/15 * * * *", "Europe/Berlin")
    last_fired = datetime.fromisoformat("2024-10-27T02:45+02:00")
    now = datetime.fromisoformat("2024-10-27T02:45+01:00")

    assert [] == schedule.due_times(last_fired, now, "once")


def test_invalid_catch_up() -> None:
    """An unknown catch-up policy raises and names both policies."""
    with pytest.raises(ValueError, match="catch_up 'later' is invalid; use 'skip' or 'once'"):
        HOURLY.due_times(None, NOON, "later")  # type: ignore[arg-type]


INVALID_CRONS = [
    pytest.param("0 6 * *", None, "has 4 fields instead of five", id="four-fields"),
    pytest.param("61 * * * *", "minute", "numbers from 0 to 59", id="minute"),
    pytest.param("0 24 * * *", "hour", "numbers from 0 to 23", id="hour"),
    pytest.param("0 0 0 * *", "day", "numbers from 1 to 31", id="day"),
    pytest.param("0 0 * 13 *", "month", "numbers from 1 to 12", id="month"),
    pytest.param("0 0 * * 8", "weekday", "numbers from 0 to 7", id="weekday"),
    pytest.param("0 0 L * *", "day", "the day field 'L' is invalid", id="last-day"),
    pytest.param("*/0 * * * *", "minute", "steps (*/n)", id="zero-step"),
    pytest.param("0 0 * * 5-1", "weekday", "runs backwards", id="backward-range"),
    pytest.param("0 0 31 2 *", "day", "never fires", id="day-not-in-month"),
    pytest.param("{{ config.cron }}", None, "has not been resolved", id="expression"),
]


@pytest.mark.parametrize(("cron", "field", "message"), INVALID_CRONS)
def test_invalid_cron(cron: str, field: str | None, message: str) -> None:
    """An invalid cron raises a ScheduleError naming the cron, the field and a fix."""
    with pytest.raises(ScheduleError) as raised:
        Schedule(cron, "Europe/Berlin")

    assert field == raised.value.field
    assert message in str(raised.value)
    assert repr(cron) in str(raised.value)
    assert raised.value.fix in str(raised.value)


def test_unknown_zone() -> None:
    """An unknown time zone raises a ScheduleError that suggests an IANA name."""
    with pytest.raises(ScheduleError) as raised:
        Schedule("0 6 * * *", "Europe/Bonn")

    expected = (
        "schedule '0 6 * * *' in Europe/Bonn: the time zone is unknown; "
        "use an IANA name such as 'Europe/Berlin' or 'UTC'"
    )
    assert expected == str(raised.value)


def test_model_accepts_what_schedule_accepts() -> None:
    """Crons that Schedule accepts also pass the definition model's validation."""
    for cron in ("0 6 * * mon-fri", "5/20 * * * *", "0 0 */2 * 1", "0 0 1 jan,jul *"):
        Schedule(cron, "Europe/Berlin")
        trigger = ScheduleTrigger(type="schedule", cron=cron, timezone="Europe/Berlin")
        assert cron == trigger.cron
