"""Every trigger kind as a table: what is set up, the events and clock moves, who enters and is sent to.

Each case publishes a one-step journey (send ``hello`` on LINE) with the case's trigger, plays its script
on a World whose clock starts at 2026-04-01 00:00 UTC (08:00 in the workspace's Asia/Taipei), and checks
the messages queued, each user's runs and what each run entered with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import Brand
from tests.journeys.world import Act, Enter, Expect, Identify, Move, MoveTo, Send, Tag, Untag, World

START = datetime(2026, 4, 1, 0, 0, tzinfo=UTC)  # 08:00 in Taipei, 07:00 in Bangkok
State = list[tuple[str, str | None, str | None]]  # (status, step, exit reason) of each run
DONE: State = [("completed", None, "completed")]
HELLO = "hello"

SHOP_MODEL = """
key: shop
name: {zh-CN: 商店, en: Shop}
stages:
  - key: buyer
    name: {zh-CN: 买家, en: Buyer}
    when: count("Order Completed") >= 1
  - key: visitor
    name: {zh-CN: 访客, en: Visitor}
    when: "true"
"""


def hello(user: str) -> tuple[str, str, str]:
    return (user, "line", HELLO)


@dataclass(frozen=True)
class TriggerCase:
    id: str
    trigger: dict[str, Any]
    acts: tuple[Act, ...]
    sends: list[tuple[str, str, str]]
    # Each user's runs at the end: (status, step, exit reason); [] for a user who never entered.
    state: dict[str, State]
    # What each run entered with: the run's trigger event, per user, in run order.
    entered_with: dict[str, list[str]] = field(default_factory=dict)
    setup: Callable[[World], None] | None = None  # before the journey is published
    start: datetime = START


def _model(world: World) -> None:
    world.lifecycle(SHOP_MODEL)


def _segments(**conditions: str) -> Callable[[World], None]:
    def make(world: World) -> None:
        for key, condition in conditions.items():
            world.segment(key, condition)

    return make


CASES = [
    TriggerCase(
        "event",
        {"kind": "event", "event": "Signed Up"},
        (Send("ann", "Signed Up"), Send("bob", "Page Viewed")),
        sends=[hello("ann")],
        state={"ann": DONE, "bob": []},
        entered_with={"ann": ["Signed Up"]},
    ),
    TriggerCase(
        "event-where-rejects",
        {"kind": "event", "event": "Channel Followed", "where": 'property.channel == "line"'},
        (
            Send("ann", "Channel Followed", {"channel": "line"}),
            Send("bob", "Channel Followed", {"channel": "wecom"}),  # the filter rejects it
            Send("cat", "Channel Followed"),  # no channel at all: rejected too
        ),
        sends=[hello("ann")],
        state={"ann": DONE, "bob": [], "cat": []},
        entered_with={"ann": ["Channel Followed"]},
    ),
    TriggerCase(
        "event-condition-on-profile-and-property",
        {
            "kind": "event",
            "event": "Order Completed",
            "condition": 'trait.city == "Taipei" and property.revenue >= 100',
        },
        (
            Identify("ann", {"city": "Taipei"}),
            Identify("bob", {"city": "Tainan"}),
            Identify("cat", {"city": "Taipei"}),
            Send("ann", "Order Completed", {"revenue": 150}),
            Send("bob", "Order Completed", {"revenue": 150}),  # the profile fails the condition
            Send("cat", "Order Completed", {"revenue": 50}),  # the event fails it
        ),
        sends=[hello("ann")],
        state={"ann": DONE, "bob": [], "cat": []},
    ),
    TriggerCase(
        "stage-entered",
        {"kind": "stage_entered", "model": "shop", "stage": "buyer"},
        (
            Send("ann", "Order Completed", {"revenue": 10}),
            Send("bob", "Page Viewed"),  # a visitor
            Send("ann", "Order Completed", {"revenue": 10}),  # still a buyer: not entered again
        ),
        sends=[hello("ann")],
        state={"ann": DONE, "bob": []},
        entered_with={"ann": ["Lifecycle Stage Entered"]},
        setup=_model,
    ),
    TriggerCase(
        "stage-left",
        {"kind": "stage_left", "model": "shop", "stage": "visitor"},
        (
            Send("ann", "Page Viewed"),
            Send("bob", "Page Viewed"),
            Expect(sends=[]),
            Send("ann", "Order Completed", {"revenue": 10}),  # visitor → buyer
        ),
        sends=[hello("ann")],
        state={"ann": DONE, "bob": []},
        entered_with={"ann": ["Lifecycle Stage Exited"]},
        setup=_model,
    ),
    TriggerCase(
        "segment-entered",
        {"kind": "segment_entered", "segment": "big_spenders"},
        (
            Send("ann", "Order Completed", {"revenue": 600}),
            Send("bob", "Order Completed", {"revenue": 50}),
            Expect(sends=[]),
            Send("ann", "Order Completed", {"revenue": 600}),  # 1 200 in all: a member now
        ),
        sends=[hello("ann")],
        state={"ann": DONE, "bob": []},
        entered_with={"ann": ["Segment Entered"]},
        setup=_segments(big_spenders='sum("Order Completed", "revenue") >= 1000'),
    ),
    TriggerCase(
        "segment-left",
        {"kind": "segment_left", "segment": "free_plan"},
        (
            Identify("ann", {"plan": "free"}),
            Identify("bob", {"plan": "free"}),
            Expect(sends=[]),
            Identify("ann", {"plan": "pro"}),
        ),
        sends=[hello("ann")],
        state={"ann": DONE, "bob": []},
        entered_with={"ann": ["Segment Exited"]},
        setup=_segments(free_plan='trait.plan == "free"'),
    ),
    TriggerCase(
        "tag-added",
        {"kind": "tag_added", "tag": "vip"},
        (
            Identify("ann"),
            Identify("bob"),
            Tag("bob", "newsletter"),  # another tag
            Tag("ann", "vip"),
            Tag("ann", "vip"),  # already held: nothing is announced, nobody enters again
        ),
        sends=[hello("ann")],
        state={"ann": DONE, "bob": []},
        entered_with={"ann": ["Tag Added"]},
    ),
    TriggerCase(
        "tag-removed",
        {"kind": "tag_removed", "tag": "vip"},
        (
            Identify("ann"),
            Identify("bob"),
            Tag("ann", "vip"),
            Tag("bob", "vip"),
            Expect(sends=[]),
            Untag("ann", "vip"),
        ),
        sends=[hello("ann")],
        state={"ann": DONE, "bob": []},
        entered_with={"ann": ["Tag Removed"]},
    ),
    TriggerCase(
        # Three days before the birthday at 10:00 in the customer's own zone: 02:00Z in Taipei, 03:00Z in
        # Bangkok; Dan has no zone of his own and takes the workspace's (Taipei).
        "date-yearly-offset-local-time",
        {"kind": "date", "trait": "birthday", "offset": "-3d", "at": "10:00"},
        (
            Identify("ann", {"birthday": "1990-04-04"}, timezone="Asia/Taipei"),
            Identify("bob", {"birthday": "1991-04-06"}, timezone="Asia/Taipei"),
            Identify("cat", {"birthday": "1992-04-04"}, timezone="Asia/Bangkok"),
            Identify("dan", {"birthday": "1993-04-04"}),
            Identify("eve", {"birthday": "not a date"}),
            Move("1h59m"),
            Expect(sends=[]),
            Move("1m"),  # 10:00 in Taipei
            Expect(sends=[hello("ann"), hello("dan")]),
            Move("59m"),
            Expect(sends=[hello("ann"), hello("dan")]),
            Move("1m"),  # 10:00 in Bangkok
            Expect(sends=[hello("ann"), hello("dan"), hello("cat")]),
            MoveTo(datetime(2026, 4, 3, 1, 59, tzinfo=UTC)),
            Expect(sends=[hello("ann"), hello("dan"), hello("cat")]),
            Move("1m"),  # Bob's 10:00, three days before 6 April
            Move("1d"),  # nobody twice
        ),
        sends=[hello("ann"), hello("dan"), hello("cat"), hello("bob")],
        state={"ann": DONE, "bob": DONE, "cat": DONE, "dan": DONE, "eve": []},
        entered_with={"ann": ["$date"], "bob": ["$date"], "cat": ["$date"]},
    ),
    TriggerCase(
        # repeat: once fires on the date itself (here the day before it, at 09:00 local), not every year.
        "date-once",
        {"kind": "date", "trait": "plan_ends", "offset": "-1d", "at": "09:00", "repeat": "once"},
        (
            Identify("ann", {"plan_ends": "2026-04-02"}, timezone="Asia/Taipei"),
            Identify("bob", {"plan_ends": "2025-04-02"}, timezone="Asia/Taipei"),  # a year ago
            Move("59m"),
            Expect(sends=[]),
            Move("1m"),  # 09:00 in Taipei on 1 April
            Move("2d"),
        ),
        sends=[hello("ann")],
        state={"ann": DONE, "bob": []},
        entered_with={"ann": ["$date"]},
    ),
    TriggerCase(
        # A birthday on 29 February is celebrated on the 28th in other years, on the day in leap years.
        "date-yearly-leap-day",
        {"kind": "date", "trait": "birthday", "at": "09:00"},
        (
            Identify("ann", {"birthday": "2000-02-29"}, timezone="Asia/Taipei"),
            Identify("bob", {"birthday": "2001-03-01"}, timezone="Asia/Taipei"),
            MoveTo(datetime(2027, 2, 28, 0, 59, tzinfo=UTC)),
            Expect(sends=[]),
            Move("1m"),  # 09:00 on 28 February 2027 in Taipei
            Expect(sends=[hello("ann")]),
            MoveTo(datetime(2027, 3, 1, 1, 0, tzinfo=UTC)),
            Expect(sends=[hello("ann"), hello("bob")]),
            MoveTo(datetime(2028, 2, 28, 1, 0, tzinfo=UTC)),  # 2028 is a leap year: not yet
            Expect(sends=[hello("ann"), hello("bob")]),
            MoveTo(datetime(2028, 2, 29, 1, 0, tzinfo=UTC)),
        ),
        sends=[hello("ann"), hello("bob"), hello("ann")],
        # Bob's 2028 entry is made a day ahead and waits for 1 March.
        state={"ann": DONE + DONE, "bob": [*DONE, ("waiting", "hello", None)]},
        entered_with={"ann": ["$date", "$date"]},
        start=datetime(2027, 2, 25, 0, 0, tzinfo=UTC),
    ),
    TriggerCase(
        # Local dates a day away from the UTC date: 2 April 13:30 at UTC+14 is 1 April 23:30Z, 31 March
        # 13:30 at UTC-11 is 1 April 00:30Z.
        "date-in-zones-a-day-from-utc",
        {"kind": "date", "trait": "birthday", "at": "13:30"},
        (
            Identify("kiri", {"birthday": "1990-04-02"}, timezone="Pacific/Kiritimati"),
            Identify("pago", {"birthday": "1990-03-31"}, timezone="Pacific/Pago_Pago"),
            Identify("bob", {"birthday": "1990-03-31"}, timezone="Asia/Taipei"),  # 31 March 05:30Z: gone
            Move("29m"),
            Expect(sends=[]),
            Move("1m"),
            Expect(sends=[hello("pago")]),
            MoveTo(datetime(2026, 4, 1, 23, 29, tzinfo=UTC)),
            Expect(sends=[hello("pago")]),
            Move("1m"),
            Move("1d"),
        ),
        sends=[hello("pago"), hello("kiri")],
        state={"kiri": DONE, "pago": DONE, "bob": []},
    ),
    TriggerCase(
        # 10:00 on the 1st of the month in the workspace's zone (Taipei): 02:00Z; members of the segment.
        "schedule-segment",
        {"kind": "schedule", "cron": "0 10 1 * *", "segment": "members"},
        (
            Identify("ann", {"member": True}),
            Identify("bob", {"member": False}),
            Move("1h59m"),
            Expect(sends=[]),
            Move("1m"),
            Expect(sends=[hello("ann")]),
            Move("1h"),  # no second fire the same month
            Identify("bob", {"member": True}),
            MoveTo(datetime(2026, 5, 1, 2, 0, tzinfo=UTC)),  # the next month: both
        ),
        sends=[hello("ann"), hello("ann"), hello("bob")],
        state={"ann": DONE + DONE, "bob": DONE},
        entered_with={"ann": ["$schedule", "$schedule"], "bob": ["$schedule"]},
        setup=_segments(members="trait.member == true"),
    ),
    TriggerCase(
        "schedule-everyone",
        {"kind": "schedule", "cron": "30 9 * * *"},  # 09:30 in Taipei: 01:30Z
        (
            Identify("ann"),
            Identify("bob"),
            Move("1h29m"),
            Expect(sends=[]),
            Move("1m"),
        ),
        sends=[hello("ann"), hello("bob")],
        state={"ann": DONE, "bob": DONE},
        entered_with={"ann": ["$schedule"], "bob": ["$schedule"]},
    ),
    TriggerCase(
        "schedule-with-condition",
        {"kind": "schedule", "cron": "30 9 * * *", "condition": 'trait.city == "Taipei"'},
        (Identify("ann", {"city": "Taipei"}), Identify("bob", {"city": "Tainan"}), Move("1h30m")),
        sends=[hello("ann")],
        state={"ann": DONE, "bob": []},
    ),
    TriggerCase(
        "manual-users-and-segment",
        {"kind": "manual"},
        (
            Identify("ann"),
            Identify("bob"),
            Identify("cat", {"vip": True}),
            Identify("dan"),
            Send("dan", "Signed Up"),  # a manual journey takes no event entries
            Enter("j", ("ann", "bob"), key="k1", entered=2),
            Enter("j", ("ann", "bob"), key="k1", entered=0),  # the same request again: nobody
            Enter("j", segment="vips", key="k2", entered=1),
        ),
        sends=[hello("ann"), hello("bob"), hello("cat")],
        state={"ann": DONE, "bob": DONE, "cat": DONE, "dan": []},
        entered_with={"ann": ["$manual"], "cat": ["$manual"]},
        setup=_segments(vips="trait.vip == true"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_trigger(engine: sa.Engine, brand: Brand, case: TriggerCase) -> None:
    world = World(engine, brand, now=case.start)
    if case.setup is not None:
        case.setup(world)
    world.template(HELLO, text="hello {{ profile.user_id }}")
    world.journey(
        {
            "key": "j",
            "name": {"zh-CN": "触发", "en": "Trigger"},
            "trigger": case.trigger,
            "steps": [{"key": "hello", "type": "send", "channel": "line", "template": HELLO}],
        }
    )
    world.play(case.acts)
    assert sorted(world.sends()) == sorted(case.sends)  # when: the Expect acts on the way
    for user, runs in case.state.items():
        assert world.state(user) == runs, user
    for user, names in case.entered_with.items():
        assert [(r["trigger"] or {}).get("event") for r in world.runs(user)] == names, user
    # Every run that sent did so once, from its one step, with the user's own text.
    texts = {(m["user"], m["content"]["text"]) for m in world.outbox()}
    assert texts == {(user, f"hello {user}") for user, _channel, _template in case.sends}
    assert world.steps() == [("hello", "queued")] * len(case.sends)
