"""Every step type as a table: the steps, the events and clock moves, then each user's step log, runs and
the messages queued (webhook calls and rich-menu links are outbox messages too, checked row by row).

Journeys here start on a ``Go`` event; the World's clock starts at 2026-04-01 00:00 UTC, 08:00 in the
workspace's Asia/Taipei.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, get_args

import pytest
import sqlalchemy as sa

from lifeloop.journeys import definition as d
from lifeloop.journeys.engine import assign_arm
from tests.conftest import Brand
from tests.journeys.world import Act, Expect, Identify, Move, MoveTo, Send, SendAll, Tag, World

START = datetime(2026, 4, 1, 0, 0, tzinfo=UTC)
LINE_ANN = "U" + "a" * 32
LINE_BOB = "U" + "b" * 32
LINE_CAT = "U" + "c" * 32
SHOP_MODEL = """
key: shop
name: {zh-CN: 商店, en: Shop}
stages:
  - {key: buyer, name: {zh-CN: 买家, en: Buyer}, when: 'count("Order Completed") >= 1'}
  - {key: visitor, name: {zh-CN: 访客, en: Visitor}, when: "true"}
"""

State = list[tuple[str, str | None, str | None]]
Log = list[tuple[str, str, str]]
DONE: State = [("completed", None, "completed")]


def send(key: str, template: str, **extra: Any) -> dict[str, Any]:
    return {"key": key, "type": "send", "channel": "line", "template": template, **extra}


def line(user: str, template: str) -> tuple[str, str, str]:
    return (user, "line", template)


@dataclass(frozen=True)
class StepCase:
    id: str
    steps: list[dict[str, Any]]
    acts: tuple[Act, ...]
    sends: list[tuple[str, str, str]] | None = None  # (user, channel, template or recipient)
    log: dict[str, Log] = field(default_factory=dict)  # per user: (step, type, outcome)
    state: dict[str, State] = field(default_factory=dict)  # per user: (status, step, exit reason)
    goal: dict[str, Any] | None = None
    trigger: dict[str, Any] = field(default_factory=lambda: {"kind": "event", "event": "Go"})
    setup: Callable[[World], None] | None = None  # before the journey is published
    check: Callable[[World], None] | None = None  # what the table cannot say: contents, tags, traits


# --- set-ups and checks ----------------------------------------------------------------------------


def _segment(key: str, condition: str) -> Callable[[World], None]:
    return lambda world: world.segment(key, condition)


def _model(world: World) -> None:
    world.lifecycle(SHOP_MODEL)


def _buyer_rule(world: World) -> None:
    from lifeloop.audience import batch
    from lifeloop.audience.definitions import put_tag_rule

    with world.engine.begin() as conn:
        _row, definition = put_tag_rule(conn, world.ws, "buyer", 'count("Order Completed") >= 1')
    batch.after_definition_change(world.engine, world.ws, definition, now=world.now)


def _key_of(world: World, user: str, step: str, n: int) -> str:
    (run,) = world.runs(user)
    return f"journey:{run['journey_id']}:v1:p{world.pid(user)}:r{run['id']}:{step}:{n}"


def _check_send_contents(world: World) -> None:
    first, second = world.outbox()
    assert (first["content"], first["transactional"]) == ({"text": "a TEA"}, True)
    assert (second["content"], second["transactional"]) == ({"text": "b TEA"}, False)
    assert first["status"] == second["status"] == "queued"
    assert [first["idempotency_key"], second["idempotency_key"]] == [
        _key_of(world, "ann", "welcome", 0),
        _key_of(world, "ann", "story", 1),
    ]


def _check_dead_letter(world: World) -> None:
    (dead,) = world.outbox()
    assert dead["status"] == "dead"
    assert "did not render" in dead["last_error"] and dead["content"].keys() == {"template_error"}


def _check_best_channel(world: World) -> None:
    assert {m["user"]: m["content"] for m in world.outbox()} == {
        "ann": {"text": "mail TEA"},
        "bob": {"text": "mail TEA"},
        "cat": {"text": "a TEA"},
    }


def _check_tag_expires(world: World) -> None:
    assert "trial" not in world.tags("ann")  # added for a day, and the day is over
    assert [e["tag"] for e in world.events("ann", "Tag Added")] == ["trial"]
    assert [e["segment"] for e in world.events("ann", "Segment Entered")] == ["trials"]


def _check_tags_removed(world: World) -> None:
    assert world.tags("ann") == set()
    assert world.tags("cat") == {"buyer"}


def _check_traits(world: World) -> None:
    traits = world.traits("ann")
    assert traits["welcomed"] is True and "coupon" not in traits
    assert [e["segment"] for e in world.events("ann", "Segment Entered")] == ["welcomed"]


def _check_webhook(world: World) -> None:
    (call,) = world.outbox()
    assert (call["channel"], call["recipient"], call["profile_id"]) == (
        "webhook",
        "https://hooks.example.com/crm",
        None,
    )
    assert call["content"] == {
        "journey": "j",
        "step": "notify_crm",
        "profile_id": world.pid("ann"),
        "event": {"sku": "TEA", "order": 7},
        "campaign": "spring",
    }
    assert call["transactional"] is True and call["status"] == "queued"
    assert call["idempotency_key"] == _key_of(world, "ann", "notify_crm", 0)


def _check_rich_menu(world: World) -> None:
    (link,) = world.outbox()
    assert (link["channel"], link["profile_id"], link["template"], link["recipient"]) == (
        "line",
        world.pid("ann"),
        None,
        None,
    )
    assert link["content"] == {"rich_menu_id": "richmenu-loyal"}
    assert link["idempotency_key"] == _key_of(world, "ann", "loyal_menu", 0)


def _converted(world: World, user: str) -> list[tuple[bool, float | None]]:
    return [(r["converted_at"] is not None, r["conversion_value"]) for r in world.runs(user)]


def _check_goal(world: World) -> None:
    assert _converted(world, "ann") == [(True, 88.0)]
    assert _converted(world, "bob") == [(False, None)]  # the order came after the day
    assert [e["value"] for e in world.events("ann", "Journey Converted")] == [88.0]


def _check_goal_keeps_going(world: World) -> None:
    assert _converted(world, "ann") == [(True, 30.0)]  # the trigger's own order does not count


def _check_goal_after_exit(world: World) -> None:
    assert _converted(world, "ann") == [(True, 40.0)]


SPLIT_USERS = [f"u{n:02d}" for n in range(30)]
SPLIT = {
    "key": "ab",
    "type": "split",
    "seed": "spring",
    "holdout": 20,
    "arms": [
        {"name": "arm_a", "weight": 1, "next": "send_a"},
        {"name": "arm_b", "weight": 1, "next": "send_b"},
    ],
}


def _check_split(world: World) -> None:
    step = d.SplitStep.model_validate(SPLIT)
    groups: dict[str, set[str]] = {"arm_a": set(), "arm_b": set(), "holdout": set()}
    sent = {user: template for user, _channel, template in world.sends()}
    for user in SPLIT_USERS:
        first, again = world.runs(user)  # entered twice: the arm is sticky
        arm = assign_arm(step, first["journey_id"], world.pid(user))
        name = arm.name if arm else "holdout"
        groups[name].add(user)
        assert first["arm"] == again["arm"] == name, user
        entered = world.events(user, "Journey Entered")
        assert {e["group"] for e in entered} == {"control" if arm is None else "treatment"}
        if arm is None:
            assert world.state(user) == [("exited", "ab", "holdout")] * 2
            assert world.log(user) == [("ab", "split", "holdout")] * 2 and user not in sent
        else:
            template = arm.next.removeprefix("send_")
            assert world.state(user) == DONE * 2 and sent[user] == template
            logged = [("ab", "split", name), (arm.next, "send", "queued"), ("end", "wait", "waited")]
            assert world.log(user) == logged * 2
    assert all(groups.values()), groups  # 30 users: each arm and the holdout have some
    assert len(world.sends()) == 2 * (len(groups["arm_a"]) + len(groups["arm_b"]))


def _split_acts() -> tuple[Act, ...]:
    everyone = SendAll(tuple(SPLIT_USERS), "Go")
    return (everyone, Move("1h"), everyone, Move("1m"))  # once more, after the first runs ended


def _branch(
    id: str,
    condition: str,
    yes: tuple[Act, ...],
    no: tuple[Act, ...],
    setup: Callable[[World], None] | None = None,
) -> StepCase:
    """Ann meets the condition and takes ``then`` (the next step), Bob takes ``else``."""
    return StepCase(
        f"branch-{id}",
        [
            {"key": "check", "type": "branch", "condition": condition, "else": "no"},
            send("yes", "a"),
            {"key": "done", "type": "exit", "reason": "yes"},
            send("no", "b"),
        ],
        (*yes, *no, Send("ann", "Go", {"revenue": 150}), Send("bob", "Go", {"revenue": 50})),
        sends=[line("ann", "a"), line("bob", "b")],
        log={
            "ann": [("check", "branch", "true"), ("yes", "send", "queued"), ("done", "exit", "exit")],
            "bob": [("check", "branch", "false"), ("no", "send", "queued")],
        },
        state={"ann": [("exited", "done", "yes")], "bob": DONE},
        setup=setup,
    )


CASES = [
    StepCase(
        "wait-duration",
        [{"key": "pause", "type": "wait", "duration": "2h"}, send("hello", "a")],
        (
            Send("ann", "Go"),
            Move("1h59m"),
            Expect(sends=[], state={"ann": [("waiting", "pause", None)]}),
            Move("1m"),
        ),
        sends=[line("ann", "a")],
        log={"ann": [("pause", "wait", "waited"), ("hello", "send", "queued")]},
        state={"ann": DONE},
    ),
    StepCase(
        "wait-until-time",  # 09:00 in the workspace's zone (no zone of her own): 01:00Z
        [{"key": "pause", "type": "wait", "until_time": "09:00"}, send("hello", "a")],
        (Send("ann", "Go"), Move("59m"), Expect(sends=[]), Move("1m")),
        sends=[line("ann", "a")],
        log={"ann": [("pause", "wait", "waited"), ("hello", "send", "queued")]},
        state={"ann": DONE},
    ),
    StepCase(
        "wait-until-trait-offset-at",  # the day before renewal, 09:00 in Taipei: 9 April 01:00Z
        [
            {"key": "pause", "type": "wait", "until_trait": "renews_on", "offset": "-1d", "at": "09:00"},
            send("hello", "a"),
        ],
        (
            Identify("ann", {"renews_on": "2026-04-10"}, timezone="Asia/Taipei"),
            Send("ann", "Go"),
            MoveTo(datetime(2026, 4, 9, 0, 59, tzinfo=UTC)),
            Expect(sends=[], state={"ann": [("waiting", "pause", None)]}),
            Move("1m"),
        ),
        sends=[line("ann", "a")],
        log={"ann": [("pause", "wait", "waited"), ("hello", "send", "queued")]},
        state={"ann": DONE},
    ),
    StepCase(
        "wait-until-trait-time",  # an ISO time, two hours before it
        [{"key": "pause", "type": "wait", "until_trait": "appointment", "offset": "-2h"}, send("hello", "a")],
        (
            Identify("ann", {"appointment": "2026-04-02T06:30:00+00:00"}),
            Send("ann", "Go"),
            MoveTo(datetime(2026, 4, 2, 4, 29, tzinfo=UTC)),
            Expect(sends=[]),
            Move("1m"),
        ),
        sends=[line("ann", "a")],
        log={"ann": [("pause", "wait", "waited"), ("hello", "send", "queued")]},
        state={"ann": DONE},
    ),
    StepCase(
        "wait-until-trait-missing-or-past",  # neither waits: no date, or a date gone by
        [{"key": "pause", "type": "wait", "until_trait": "renews_on"}, send("hello", "a")],
        (Identify("bob", {"renews_on": "2020-01-01"}), Send("ann", "Go"), Send("bob", "Go")),
        sends=[line("ann", "a"), line("bob", "a")],
        log={
            "ann": [("pause", "wait", "no_date"), ("hello", "send", "queued")],
            "bob": [("pause", "wait", "waited"), ("hello", "send", "queued")],
        },
        state={"ann": DONE, "bob": DONE},
    ),
    StepCase(
        "wait-for-event-or-timeout",
        [
            {
                "key": "wait_reply",
                "type": "wait_for",
                "event": "Replied",
                "timeout": "1d",
                "on_event": "thanks",
            },
            send("nudge", "a"),
            {"key": "nudged", "type": "exit", "reason": "nudged"},
            send("thanks", "b"),
        ],
        (
            Send("cat", "Replied"),  # before entering: it does not answer the wait
            Send("ann", "Go"),
            Send("bob", "Go"),
            Send("cat", "Go"),
            Move("2h"),
            Send("ann", "Replied"),
            Send("bob", "Something Else"),
            Move("21h59m"),
            Expect(sends=[line("ann", "b")], state={"bob": [("waiting", "wait_reply", None)]}),
            Move("1m"),
        ),
        sends=[line("ann", "b"), line("bob", "a"), line("cat", "a")],
        log={
            "ann": [("wait_reply", "wait_for", "event"), ("thanks", "send", "queued")],
            "bob": [
                ("wait_reply", "wait_for", "timeout"),
                ("nudge", "send", "queued"),
                ("nudged", "exit", "exit"),
            ],
        },
        state={"ann": DONE, "bob": [("exited", "nudged", "nudged")], "cat": [("exited", "nudged", "nudged")]},
    ),
    StepCase(
        "wait-for-on-timeout",  # on_timeout named, on_event the next step
        [
            {
                "key": "wait_reply",
                "type": "wait_for",
                "event": "Replied",
                "timeout": "1h",
                "on_timeout": "nudge",
            },
            send("thanks", "b"),
            {"key": "thanked", "type": "exit", "reason": "thanked"},
            send("nudge", "a"),
        ],
        (
            Send("ann", "Go"),
            Send("bob", "Go"),
            Move("30m"),
            Send("ann", "Replied"),
            Move("30m"),
            Send("bob", "Replied"),  # after the timeout: too late
        ),
        sends=[line("ann", "b"), line("bob", "a")],
        log={
            "ann": [
                ("wait_reply", "wait_for", "event"),
                ("thanks", "send", "queued"),
                ("thanked", "exit", "exit"),
            ],
            "bob": [("wait_reply", "wait_for", "timeout"), ("nudge", "send", "queued")],
        },
        state={"ann": [("exited", "thanked", "thanked")], "bob": DONE},
    ),
    StepCase(
        "wait-for-match-and-where",  # the order must be for the cart that started it, and paid
        [
            {
                "key": "wait_order",
                "type": "wait_for",
                "event": "Order Completed",
                "timeout": "1h",
                "match": {"cart_id": "cart_id"},
                "where": "property.revenue > 0",
                "on_event": "bought",
            },
            send("remind", "a"),
            {"key": "reminded", "type": "exit", "reason": "reminded"},
            {"key": "bought", "type": "exit", "reason": "bought"},
        ],
        (
            Send("ann", "Go", {"cart_id": "c1"}),
            Send("bob", "Go", {"cart_id": "c3"}),
            Send("ann", "Order Completed", {"cart_id": "c2", "revenue": 10}),  # another cart
            Send("ann", "Order Completed", {"cart_id": "c1", "revenue": 0}),  # the filter rejects it
            Send("bob", "Order Completed", {"cart_id": "c3", "revenue": 5}),
            Move("1h"),
        ),
        sends=[line("ann", "a")],
        log={
            "ann": [
                ("wait_order", "wait_for", "timeout"),
                ("remind", "send", "queued"),
                ("reminded", "exit", "exit"),
            ],
            "bob": [("wait_order", "wait_for", "event"), ("bought", "exit", "exit")],
        },
        state={"ann": [("exited", "reminded", "reminded")], "bob": [("exited", "bought", "bought")]},
    ),
    _branch(
        "trait",
        'trait.city == "Taipei"',
        (Identify("ann", {"city": "Taipei"}),),
        (Identify("bob", {"city": "Tainan"}),),
    ),
    _branch(
        "computed",
        'count("Order Completed") >= 2 and sum("Order Completed", "revenue") >= 100',
        (Send("ann", "Order Completed", {"revenue": 60}), Send("ann", "Order Completed", {"revenue": 90})),
        (Send("bob", "Order Completed", {"revenue": 200}),),
    ),
    _branch(
        "stage",
        'in_stage("shop", "buyer")',
        (Send("ann", "Order Completed", {"revenue": 1}),),
        (Send("bob", "Page Viewed"),),
        setup=_model,
    ),
    _branch("tag", 'has_tag("vip")', (Identify("ann"), Tag("ann", "vip")), (Identify("bob"),)),
    _branch(
        "segment",
        'in_segment("big")',
        (Identify("ann", {"big": True}),),
        (Identify("bob", {"big": False}),),
        setup=_segment("big", "trait.big == true"),
    ),
    _branch("trigger-property", "property.revenue >= 100", (), ()),
    StepCase(
        "branch-false-without-else-leaves",
        [{"key": "check", "type": "branch", "condition": 'has_tag("vip")'}, send("hello", "a")],
        (Identify("ann"), Tag("ann", "vip"), Send("ann", "Go"), Send("bob", "Go")),
        sends=[line("ann", "a")],
        log={
            "ann": [("check", "branch", "true"), ("hello", "send", "queued")],
            "bob": [("check", "branch", "false")],
        },
        state={"ann": DONE, "bob": [("exited", "check", "branch")]},
    ),
    StepCase(
        "split-sticky-with-holdout",
        [
            SPLIT,
            send("send_a", "a", next="end"),
            send("send_b", "b"),
            {"key": "end", "type": "wait", "duration": "1s"},
        ],
        _split_acts(),
        check=_check_split,
    ),
    StepCase(
        "send-template-and-channel",
        [send("welcome", "a", transactional=True), send("story", "b")],
        (Send("ann", "Go", {"sku": "TEA"}),),
        sends=[line("ann", "a"), line("ann", "b")],
        log={"ann": [("welcome", "send", "queued"), ("story", "send", "queued")]},
        state={"ann": DONE},
        check=_check_send_contents,
    ),
    StepCase(
        "send-that-does-not-render-is-a-dead-letter",
        [send("hello", "broken"), {"key": "after", "type": "add_tag", "tag": "went_on"}],
        (Send("ann", "Go", {"n": 5}),),
        sends=[line("ann", "broken")],
        log={"ann": [("hello", "send", "dead"), ("after", "add_tag", "added")]},
        state={"ann": DONE},
        check=_check_dead_letter,
    ),
    StepCase(
        "send-best-reachable-channel",
        [{"key": "hello", "type": "send", "channel": "best", "templates": {"line": "a", "email": "mail"}}],
        (
            Identify("ann", {"email": "ann@example.com"}),
            Identify("bob", {"email": "bob@example.com", "line_user_id": LINE_BOB}),
            Identify("cat", {"email": "cat@example.com", "line_user_id": LINE_CAT}),
            Identify("dan"),
            lambda world: world.unsubscribe("bob", "line"),
            *(Send(u, "Go", {"sku": "TEA"}) for u in ("ann", "bob", "cat", "dan")),
        ),
        sends=[("ann", "email", "mail"), ("bob", "email", "mail"), line("cat", "a")],
        log={"dan": [("hello", "send", "unreachable")], "cat": [("hello", "send", "queued")]},
        state={"ann": DONE, "bob": DONE, "cat": DONE, "dan": DONE},
        check=_check_best_channel,
    ),
    StepCase(
        "add-tag-that-expires",
        [
            {"key": "trial", "type": "add_tag", "tag": "trial", "expires": "1d"},
            {"key": "pause", "type": "wait", "duration": "1h"},
            {"key": "check", "type": "branch", "condition": 'has_tag("trial")'},
            send("hello", "a"),
        ],
        (Send("ann", "Go"), Move("1h"), Move("1d")),
        sends=[line("ann", "a")],  # still held an hour later
        log={
            "ann": [
                ("trial", "add_tag", "added"),
                ("pause", "wait", "waited"),
                ("check", "branch", "true"),
                ("hello", "send", "queued"),
            ]
        },
        state={"ann": DONE},
        setup=_segment("trials", 'has_tag("trial")'),
        check=_check_tag_expires,
    ),
    StepCase(
        "remove-tag",  # a manual tag goes; none held; one a tag rule holds stays
        [{"key": "untag", "type": "remove_tag", "tag": "buyer"}],
        (
            Identify("ann"),
            Tag("ann", "buyer"),
            Identify("bob"),
            Send("cat", "Order Completed", {"revenue": 1}),
            *(Send(u, "Go") for u in ("ann", "bob", "cat")),
        ),
        sends=[],
        log={
            "ann": [("untag", "remove_tag", "removed")],
            "bob": [("untag", "remove_tag", "not_held")],
            "cat": [("untag", "remove_tag", "held_by_rule")],
        },
        state={"ann": DONE, "bob": DONE, "cat": DONE},
        setup=_buyer_rule,
        check=_check_tags_removed,
    ),
    StepCase(
        "set-trait-and-remove-one",  # a segment reading the trait follows in the same transaction
        [
            {"key": "welcomed", "type": "set_trait", "trait": "welcomed", "value": True},
            {"key": "spent", "type": "set_trait", "trait": "coupon", "value": None},
            {"key": "check", "type": "branch", "condition": 'in_segment("welcomed")'},
            send("hello", "a"),
        ],
        (Identify("ann", {"coupon": "SPRING"}), Send("ann", "Go")),
        sends=[line("ann", "a")],
        log={
            "ann": [
                ("welcomed", "set_trait", "set"),
                ("spent", "set_trait", "set"),
                ("check", "branch", "true"),
                ("hello", "send", "queued"),
            ]
        },
        state={"ann": DONE},
        setup=_segment("welcomed", "trait.welcomed == true"),
        check=_check_traits,
    ),
    StepCase(
        "webhook",
        [
            {
                "key": "notify_crm",
                "type": "webhook",
                "url": "https://hooks.example.com/crm",
                "body": {"campaign": "spring"},
            }
        ],
        (Send("ann", "Go", {"sku": "TEA", "order": 7}),),
        sends=[("https://hooks.example.com/crm", "webhook", "https://hooks.example.com/crm")],
        log={"ann": [("notify_crm", "webhook", "queued")]},
        state={"ann": DONE},
        check=_check_webhook,
    ),
    StepCase(
        "line-rich-menu",
        [{"key": "loyal_menu", "type": "line_rich_menu", "rich_menu_id": "richmenu-loyal"}],
        (Identify("ann", {"line_user_id": LINE_ANN}), Send("ann", "Go")),
        log={"ann": [("loyal_menu", "line_rich_menu", "queued")]},
        state={"ann": DONE},
        check=_check_rich_menu,
    ),
    StepCase(
        "exit-and-next",
        [
            send("first", "a", next="third"),
            send("second", "b"),
            send("third", "c"),
            {"key": "bye", "type": "exit", "reason": "said_all"},
            send("never", "b"),
        ],
        (Send("ann", "Go"),),
        sends=[line("ann", "a"), line("ann", "c")],
        log={"ann": [("first", "send", "queued"), ("third", "send", "queued"), ("bye", "exit", "exit")]},
        state={"ann": [("exited", "bye", "said_all")]},
    ),
    StepCase(
        "goal-within-and-where",
        [{"key": "pause", "type": "wait", "duration": "2d"}, send("hello", "a")],
        (
            Send("ann", "Go"),
            Send("bob", "Go"),
            Move("1h"),
            Send("ann", "Order Completed", {"revenue": 0}),  # the goal's filter rejects it
            Send("ann", "Order Completed", {"revenue": 88}),
            Move("1d"),
            Send("bob", "Order Completed", {"revenue": 50}),  # 25 hours in: too late
            Move("1d"),
        ),
        goal={"event": "Order Completed", "within": "1d", "where": "property.revenue > 0"},
        sends=[line("bob", "a")],
        log={"ann": [], "bob": [("pause", "wait", "waited"), ("hello", "send", "queued")]},
        state={"ann": [("exited", "pause", "goal")], "bob": DONE},
        check=_check_goal,
    ),
    StepCase(
        "goal-without-exit-and-not-the-trigger",
        [{"key": "pause", "type": "wait", "duration": "1d"}, send("hello", "a")],
        (
            Send("ann", "Order Completed", {"revenue": 100}),
            Move("1h"),
            Send("ann", "Order Completed", {"revenue": 30}),  # inside: no second entry; converts
            Move("1d"),
        ),
        trigger={"kind": "event", "event": "Order Completed"},
        goal={"event": "Order Completed", "within": "7d", "exit": False},
        sends=[line("ann", "a")],
        state={"ann": DONE},
        check=_check_goal_keeps_going,
    ),
    StepCase(
        "goal-after-the-run-ended",
        [send("hello", "a")],
        (Send("ann", "Go"), Move("1d"), Send("ann", "Order Completed", {"revenue": 40})),
        goal={"event": "Order Completed", "within": "7d"},
        sends=[line("ann", "a")],
        state={"ann": DONE},
        check=_check_goal_after_exit,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_step(engine: sa.Engine, brand: Brand, case: StepCase) -> None:
    world = World(engine, brand, now=START)
    if case.setup is not None:
        case.setup(world)
    for key in ("a", "b", "c"):
        world.template(key, text=key + ' {{ event.sku | default: "-" }}')
    world.template("mail", channel="email", text='mail {{ event.sku | default: "-" }}')
    world.template("broken", text="{{ event.n | divided_by: 0 }}")
    world.journey(
        {
            "key": "j",
            "name": {"zh-CN": "步骤", "en": "Steps"},
            "trigger": case.trigger,
            "steps": case.steps,
            **({"goal": case.goal} if case.goal else {}),
        }
    )
    world.play(case.acts)
    if case.sends is not None:
        assert world.sends() == case.sends
    for user, log in case.log.items():
        assert world.log(user) == log, user
    for user, runs in case.state.items():
        assert world.state(user) == runs, user
    if case.check is not None:
        case.check(world)


# The engagement programme's steps need its coupon templates and advisors: test_engagement_steps.py.
ENGAGEMENT_STEPS = {"issue_coupon", "award_points", "advisor_task"}


def test_the_table_covers_every_step_type() -> None:
    union, *_field = get_args(d.Step)
    admitted = {kind for model in get_args(union) for kind in get_args(model.model_fields["type"].annotation)}
    assert {step["type"] for case in CASES for step in case.steps} == admitted - ENGAGEMENT_STEPS


def test_split_arms_stay_across_versions_and_move_with_the_seed(engine: sa.Engine, brand: Brand) -> None:
    """Publishing a new version keeps everyone in their arm (the same journey, step and seed); a new seed
    deals the arms again."""
    world = World(engine, brand, now=START)
    for key in ("a", "b"):
        world.template(key, text=key)
    users = SPLIT_USERS[:20]

    def publish(seed: str) -> None:
        split = {**SPLIT, "seed": seed, "holdout": 0}
        world.journey(
            {
                "key": "j",
                "name": {"zh-CN": "分流", "en": "Split"},
                "trigger": {"kind": "event", "event": "Go"},
                "steps": [
                    split,
                    send("send_a", "a", next="end"),
                    send("send_b", "b"),
                    {"key": "end", "type": "exit", "reason": "split"},
                ],
            }
        )

    def arms() -> dict[str, str]:
        world.send_all(users, "Go")
        return {user: str(world.runs(user)[-1]["arm"]) for user in users}

    publish("spring")
    first = arms()
    assert set(first.values()) == {"arm_a", "arm_b"}
    publish("spring")  # version 2, the same seed
    assert arms() == first
    assert {r["version"] for r in world.runs()} == {1, 2}
    publish("autumn")  # version 3, another seed
    dealt_again = arms()
    assert dealt_again != first and set(dealt_again.values()) == {"arm_a", "arm_b"}
    sent = [(user, template) for user, _channel, template in world.sends()]
    expected = [
        (u, arm.removeprefix("arm_")) for dealt in (first, first, dealt_again) for u, arm in dealt.items()
    ]
    assert sorted(sent) == sorted(expected)
