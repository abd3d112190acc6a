"""Schedules fired by schedulers on an injected clock: DST transitions, two schedulers, catch-up."""

from __future__ import annotations

import datetime
import threading
from collections import Counter
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from splice.engine.values import decode
from splice.service.runtime import Runtime
from splice.settings import Settings
from splice.store.tables import executions


class Clock:
    """A settable clock that returns ``moment`` as a Unix timestamp."""

    def __init__(self, moment: datetime.datetime) -> None:
        self.moment = moment

    def __call__(self) -> float:
        return self.moment.timestamp()


def _definition(zones: list[str]) -> str:
    flows = []
    for index, zone in enumerate(zones):
        for name, cron in (("daily", "30 2 * * *"), ("half", "*/30 * * * *")):
            flows.append(
                f"""
  {name}_{index}:
    trigger: {{type: schedule, cron: "{cron}", timezone: {zone}, catch_up: once}}
    steps:
      - {{id: note, action: log.write, inputs: {{message: tick}}}}"""
            )
    return "key: clocks\nname: Clocks\nflows:" + "".join(flows) + "\n"


def _runtime(tmp_path, database_url, clock) -> Runtime:
    settings = Settings.from_env(
        {
            "SPLICE_DATA_DIR": str(tmp_path / "data"),
            "SPLICE_DATABASE_URL": database_url,
            "SPLICE_MASTER_KEY": "x" * 43 + "=",
        }
    )
    return Runtime(settings, clock=clock)


def _fired(runtime: Runtime) -> list[tuple[str, datetime.datetime]]:
    with runtime.store.engine.connect() as connection:
        rows = connection.execute(select(executions.c.flow, executions.c.trigger)).all()
    return [
        (row.flow, datetime.datetime.fromisoformat(decode(row.trigger)["trigger"]["scheduled_for"]))
        for row in rows
    ]


# (zone, local date of a transition): spring forward and fall back in each zone, 2026.
TRANSITIONS = {
    "Europe/Berlin": (datetime.date(2026, 3, 29), datetime.date(2026, 10, 25)),
    "America/New_York": (datetime.date(2026, 3, 8), datetime.date(2026, 11, 1)),
    "Australia/Sydney": (datetime.date(2026, 10, 4), datetime.date(2026, 4, 5)),
}


@pytest.mark.parametrize("season", ["spring", "autumn"])
@pytest.mark.parametrize("zone", list(TRANSITIONS))
def test_two_schedulers_fire_once_across_dst(tmp_path, database_url, definition, season, zone):
    """Daily 02:30 fires once per local day (also on the day without 02:30), and every
    half hour fires once per wall-clock time, with two schedulers racing at every tick."""
    zones = [zone]
    path = definition(_definition(zones))
    days = {zone: TRANSITIONS[zone][0 if season == "spring" else 1]}
    start = min(
        datetime.datetime.combine(day - datetime.timedelta(days=1), datetime.time(), ZoneInfo(zone))
        for zone, day in days.items()
    ).astimezone(datetime.UTC)
    end = max(
        datetime.datetime.combine(day + datetime.timedelta(days=2), datetime.time(), ZoneInfo(zone))
        for zone, day in days.items()
    ).astimezone(datetime.UTC)
    clock = Clock(start)
    first = _runtime(tmp_path, database_url, clock)
    second = _runtime(tmp_path, database_url, clock)
    try:
        from splice.definition import load_integration

        first.instances.deploy(load_integration(path), customer="acme")
        one, two = first.start_scheduler(), second.start_scheduler()
        one.stop(), two.stop()  # driven by hand below, on the fake clock
        step = datetime.timedelta(minutes=10)
        while clock.moment <= end:
            barrier = threading.Barrier(2)

            def tick(scheduler, barrier=barrier):
                barrier.wait()
                scheduler.tick()

            threads = [threading.Thread(target=tick, args=(s,)) for s in (one, two)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            clock.moment += step
        fired = _fired(first)
    finally:
        second.close()
        first.close()
    assert len(fired) == len(set(fired)), "a due time fired twice"
    for index, zone in enumerate(zones):
        local = ZoneInfo(zone)
        day = days[zone]
        daily = [due.astimezone(local) for flow, due in fired if flow == f"daily_{index}"]
        dates = Counter(moment.date() for moment in daily)
        for offset in (-1, 0, 1):
            assert dates[day + datetime.timedelta(days=offset)] == 1, (zone, season, daily)
        half = [due.astimezone(local) for flow, due in fired if flow == f"half_{index}"]
        on_day = [moment for moment in half if moment.date() == day]
        walls = Counter(moment.replace(tzinfo=None) for moment in on_day)
        assert max(walls.values()) == 1, (zone, season, "a wall-clock time fired twice")
        expected = 46 if season == "spring" else 48
        assert len(on_day) == expected, (zone, season, len(on_day))


SKIPPABLE = """
key: hourly
name: Hourly
config:
  cron: {type: string, default: "0 * * * *"}
flows:
  skip:
    trigger: {type: schedule, cron: "0 * * * *", catch_up: skip}
    steps: [{id: note, action: log.write, inputs: {message: tick}}]
  once:
    trigger: {type: schedule, cron: "0 * * * *", catch_up: once}
    steps: [{id: note, action: log.write, inputs: {message: tick}}]
  configured:
    trigger: {type: schedule, cron: "{{ config.cron }}", timezone: Europe/Paris}
    steps: [{id: note, action: log.write, inputs: {message: tick}}]
"""


def test_catch_up_and_cron_from_config(tmp_path, database_url, definition):
    from splice.definition import load_integration

    path = definition(SKIPPABLE)
    clock = Clock(datetime.datetime(2026, 6, 1, 8, 0, 30, tzinfo=datetime.UTC))
    runtime = _runtime(tmp_path, database_url, clock)
    try:
        integration = load_integration(path)
        runtime.instances.deploy(integration, customer="early", assignments=["cron=15 * * * *"])
        runtime.instances.deploy(integration, customer="late", assignments=["cron=45 * * * *"])
        scheduler = runtime.start_scheduler()
        scheduler.stop()
        clock.moment = datetime.datetime(2026, 6, 1, 9, 0, 10, tzinfo=datetime.UTC)
        scheduler.tick()
        # Down from 09:00:10 to 12:20: three due times of each hourly flow were missed.
        clock.moment = datetime.datetime(2026, 6, 1, 12, 20, tzinfo=datetime.UTC)
        scheduler.tick()
        fired = Counter(flow for flow, _ in _fired(runtime))
        assert fired["skip"] == 2  # 09:00 on time (two instances), the missed ones skipped
        assert fired["once"] == 4  # 09:00, then the latest missed one (12:00), per instance
        for minute in (15, 45):  # each instance's own schedule, from its config value
            clock.moment = datetime.datetime(2026, 6, 1, 12, minute, 20, tzinfo=datetime.UTC)
            scheduler.tick()
        clock.moment = datetime.datetime(2026, 6, 1, 13, 0, 20, tzinfo=datetime.UTC)
        scheduler.tick()
        fired_at = {(flow, due.minute) for flow, due in _fired(runtime) if flow == "configured"}
        assert fired_at == {("configured", 15), ("configured", 45)}
        fired = Counter(flow for flow, _ in _fired(runtime))
        assert fired["skip"] == 4
    finally:
        runtime.close()


def test_disabled_instances_do_not_fire(tmp_path, database_url, definition):
    from splice.definition import load_integration

    clock = Clock(datetime.datetime(2026, 6, 1, 8, 0, 30, tzinfo=datetime.UTC))
    runtime = _runtime(tmp_path, database_url, clock)
    try:
        deployment = runtime.instances.deploy(
            load_integration(definition(SKIPPABLE)), customer="acme"
        )
        runtime.instances.set_enabled(deployment.instance.id, False)
        scheduler = runtime.start_scheduler()
        scheduler.stop()
        clock.moment = datetime.datetime(2026, 6, 1, 9, 0, 10, tzinfo=datetime.UTC)
        assert scheduler.tick() == []
    finally:
        runtime.close()


def test_deploy_rejects_invalid_cron_config(tmp_path, database_url, definition):
    from splice.definition import load_integration
    from splice.errors import ConfigError

    runtime = _runtime(tmp_path, database_url, Clock(datetime.datetime.now(datetime.UTC)))
    try:
        with pytest.raises(ConfigError) as raised:
            runtime.instances.deploy(
                load_integration(definition(SKIPPABLE)),
                customer="acme",
                assignments=["cron=every day"],
            )
        assert "flows.configured.trigger.cron" in str(raised.value)
        assert runtime.instances.find() == []
    finally:
        runtime.close()
