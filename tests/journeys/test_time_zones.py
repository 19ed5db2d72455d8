"""Local times in the customer's own time zone, on an injected clock: a wait until 09:00 wakes Taipei at
01:00 UTC and Bangkok at 02:00 UTC; in Europe/Berlin it stays 09:00 across the daylight-saving changes of
2026 (spring forward on 29 March, fall back on 25 October): 08:00 UTC in winter, 07:00 UTC in summer.
Date triggers and the workspace's schedules keep their local time across the change the same way."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from tests.conftest import Brand
from tests.journeys.world import World

MINUTE = timedelta(minutes=1)
DONE = [("completed", None, "completed")]


def utc(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def nine_oclock(world: World, *, waits: int = 1) -> None:
    """A journey on ``Go``: ``waits`` times, wait until 09:00 local and send ``day<n>``."""
    steps = []
    for n in range(1, waits + 1):
        world.template(f"day{n}", text=f"day {n}")
        steps += [
            {"key": f"wait{n}", "type": "wait", "until_time": "09:00"},
            {"key": f"send{n}", "type": "send", "channel": "line", "template": f"day{n}"},
        ]
    world.journey(
        {
            "key": "nine",
            "name": {"zh-CN": "九点", "en": "Nine"},
            "trigger": {"kind": "event", "event": "Go"},
            "steps": steps,
        }
    )


def sent_at(world: World) -> list[tuple[str, str, datetime]]:
    """(user, template, the moment its step ran) of every message, from the step log and the outbox."""
    from lifeloop.journeys.models import journey_steps

    users = world.users_by_pid()
    by_outbox: dict[int, datetime] = {}
    with world.engine.connect() as conn:
        rows = conn.execute(
            sa.select(journey_steps.c.outbox_id, journey_steps.c.at).where(
                journey_steps.c.workspace_id == world.ws, journey_steps.c.outbox_id.is_not(None)
            )
        )
        by_outbox = {r.outbox_id: r.at for r in rows}
    return [(users[m["profile_id"]], m["template"], by_outbox[m["id"]]) for m in world.outbox()]


@dataclass(frozen=True)
class WaitCase:
    id: str
    timezone: str | None  # the customer's; None: the workspace's (Asia/Taipei)
    enters: datetime
    wakes: datetime


WAITS = [
    WaitCase("taipei", "Asia/Taipei", utc(4, 1, 0), utc(4, 1, 1)),  # 08:00 local → 09:00
    WaitCase("bangkok", "Asia/Bangkok", utc(4, 1, 0), utc(4, 1, 2)),  # 07:00 local → 09:00
    WaitCase("taipei-after-nine-waits-for-tomorrow", "Asia/Taipei", utc(4, 1, 2), utc(4, 2, 1)),
    WaitCase("no-zone-takes-the-workspace-zone", None, utc(4, 1, 0), utc(4, 1, 1)),
    WaitCase("unknown-zone-takes-the-workspace-zone", "Mars/Olympus_Mons", utc(4, 1, 0), utc(4, 1, 1)),
    WaitCase("kolkata-half-hour-offset", "Asia/Kolkata", utc(4, 1, 0), utc(4, 1, 3, 30)),
    WaitCase("berlin-winter-same-day", "Europe/Berlin", utc(3, 28, 6), utc(3, 28, 8)),  # CET, +1
    WaitCase("berlin-over-spring-forward", "Europe/Berlin", utc(3, 28, 12), utc(3, 29, 7)),  # → CEST, +2
    WaitCase("berlin-in-the-night-of-spring-forward", "Europe/Berlin", utc(3, 29, 0, 30), utc(3, 29, 7)),
    WaitCase("berlin-summer", "Europe/Berlin", utc(7, 1, 6), utc(7, 1, 7)),
    WaitCase("berlin-over-fall-back", "Europe/Berlin", utc(10, 24, 12), utc(10, 25, 8)),  # → CET, +1
    WaitCase(
        "berlin-in-the-repeated-hour", "Europe/Berlin", utc(10, 25, 0, 30), utc(10, 25, 8)
    ),  # 02:30 CEST
    WaitCase("sydney-over-the-end-of-summer-time", "Australia/Sydney", utc(4, 4, 12), utc(4, 4, 23)),
]


@pytest.mark.parametrize("case", WAITS, ids=[c.id for c in WAITS])
def test_a_wait_until_nine_local(engine: sa.Engine, brand: Brand, case: WaitCase) -> None:
    world = World(engine, brand, now=case.enters)
    nine_oclock(world)
    world.identify("ann", timezone=case.timezone)
    world.send("ann", "Go")
    (run,) = world.runs("ann")
    assert (run["status"], run["step"], run["in_wait"], run["due_at"]) == (
        "waiting",
        "wait1",
        True,
        case.wakes,
    )
    world.move(case.wakes - MINUTE - world.now)
    assert world.sends() == [] and world.state("ann") == [("waiting", "wait1", None)]
    world.move(MINUTE)
    assert sent_at(world) == [("ann", "day1", case.wakes)]
    assert world.state("ann") == DONE


def test_taipei_and_bangkok_entering_together_wake_an_hour_apart(engine: sa.Engine, brand: Brand) -> None:
    world = World(engine, brand, now=utc(4, 1, 0))
    nine_oclock(world)
    world.identify("tw", timezone="Asia/Taipei")
    world.identify("th", timezone="Asia/Bangkok")
    world.send("tw", "Go")
    world.send("th", "Go")
    world.move("59m")
    assert world.sends() == []
    world.move("1m")  # 01:00Z: 09:00 in Taipei, 08:00 in Bangkok
    assert world.sends() == [("tw", "line", "day1")]
    assert world.state("th") == [("waiting", "wait1", None)]
    world.move("59m")
    assert world.sends() == [("tw", "line", "day1")]
    world.move("1m")  # 02:00Z: 09:00 in Bangkok
    assert sent_at(world) == [("tw", "day1", utc(4, 1, 1)), ("th", "day1", utc(4, 1, 2))]


@dataclass(frozen=True)
class SeriesCase:
    id: str
    enters: datetime
    wakes: tuple[datetime, datetime, datetime]


SERIES = [
    SeriesCase("spring-forward", utc(3, 27, 12), (utc(3, 28, 8), utc(3, 29, 7), utc(3, 30, 7))),
    SeriesCase("fall-back", utc(10, 23, 12), (utc(10, 24, 7), utc(10, 25, 8), utc(10, 26, 8))),
]


@pytest.mark.parametrize("case", SERIES, ids=[c.id for c in SERIES])
def test_a_berlin_customer_gets_nine_oclock_every_day_across_the_change(
    engine: sa.Engine, brand: Brand, case: SeriesCase
) -> None:
    """Three days of "wait until 09:00, send": the run that is parked over the change keeps 09:00."""
    world = World(engine, brand, now=case.enters)
    nine_oclock(world, waits=3)
    world.identify("berlin", timezone="Europe/Berlin")
    world.send("berlin", "Go")
    for n, wake in enumerate(case.wakes):
        world.move(wake - MINUTE - world.now)
        assert len(world.sends()) == n, f"before day {n + 1}"
        world.move(MINUTE)
        assert len(world.sends()) == n + 1, f"day {n + 1}"
    assert sent_at(world) == [("berlin", f"day{n}", wake) for n, wake in enumerate(case.wakes, 1)]
    assert world.state("berlin") == DONE


def test_a_date_trigger_keeps_its_local_time_across_spring_forward(engine: sa.Engine, brand: Brand) -> None:
    """On the day itself at 09:00 local: the day before the change 08:00Z, the day of it 07:00Z; a Taipei
    customer with the same date is at 01:00Z."""
    world = World(engine, brand, now=utc(3, 27, 12))
    world.template("wishes", text="wishes")
    world.identify("before", {"birthday": "1990-03-28"}, timezone="Europe/Berlin")
    world.identify("on", {"birthday": "1985-03-29"}, timezone="Europe/Berlin")
    world.identify("taipei", {"birthday": "1985-03-29"}, timezone="Asia/Taipei")
    world.journey(
        {
            "key": "birthday",
            "name": {"zh-CN": "生日", "en": "Birthday"},
            "trigger": {"kind": "date", "trait": "birthday", "at": "09:00"},
            "steps": [{"key": "wish", "type": "send", "channel": "line", "template": "wishes"}],
        }
    )
    expected = [("before", utc(3, 28, 8)), ("taipei", utc(3, 29, 1)), ("on", utc(3, 29, 7))]
    for n, (_user, at) in enumerate(expected):
        while world.now < at - MINUTE:  # the worker looks every hour, and once just before
            world.move(min(timedelta(hours=1), at - MINUTE - world.now))
        assert len(world.sends()) == n
        world.move(MINUTE)
        assert len(world.sends()) == n + 1
    assert sent_at(world) == [(user, "wishes", at) for user, at in expected]
    world.move("2d")
    assert len(world.sends()) == 3  # nobody twice


def test_a_schedule_fires_at_the_workspace_local_time_across_spring_forward(
    engine: sa.Engine, brand: Brand
) -> None:
    """A daily 09:00 cron in a Berlin workspace: 08:00Z on 28 March, 07:00Z on 29 and 30 March."""
    from lifeloop.workspaces.models import workspaces

    with engine.begin() as conn:
        conn.execute(
            sa.update(workspaces)
            .where(workspaces.c.id == brand.workspace_id)
            .values(timezone="Europe/Berlin")
        )
    world = World(engine, brand, now=utc(3, 27, 12))
    world.template("daily", text="daily")
    world.identify("ann")
    world.journey(
        {
            "key": "daily",
            "name": {"zh-CN": "每日", "en": "Daily"},
            "trigger": {"kind": "schedule", "cron": "0 9 * * *"},
            "steps": [{"key": "hello", "type": "send", "channel": "line", "template": "daily"}],
        }
    )
    fires = [utc(3, 28, 8), utc(3, 29, 7), utc(3, 30, 7)]
    for n, fire in enumerate(fires):
        world.move(fire - MINUTE - world.now)
        assert len(world.sends()) == n, f"before {fire:%d %B}"
        world.move(MINUTE)
        assert len(world.sends()) == n + 1, f"at {fire:%d %B}"
    assert [(r["trigger"] or {})["properties"]["fired_at"] for r in world.runs("ann")] == [
        f.isoformat() for f in fires
    ]
    assert world.state("ann") == DONE * 3
