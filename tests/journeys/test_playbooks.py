"""The shipped playbooks: each loads, installs (twice, the second time writing nothing), publishes and
renders in zh-CN and en; welcome_line, cart_abandonment, birthday and churned_big_sales run end to end."""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from lifeloop.audience.query import member_ids
from lifeloop.errors import InvalidInput, NotFound
from lifeloop.journeys.definition import load_definition
from lifeloop.journeys.engine import run_until_idle
from lifeloop.journeys.playbooks import (
    install_playbook,
    list_playbooks,
    load_playbook,
    playbook,
    playbook_keys,
)
from lifeloop.messaging.inbound.service import line_event
from lifeloop.messaging.models import outbox
from lifeloop.messaging.templates.service import get_template, preview
from lifeloop.profiles.service import find_by_identity
from tests.conftest import Brand, snapshot
from tests.journeys.world import World

KEYS = playbook_keys()
CJK = re.compile(r"[\u4e00-\u9fff]")
TAIPEI = ZoneInfo("Asia/Taipei")
# Properties the templates may read from their trigger event.
SAMPLE_EVENT = {
    "channel": "line",
    "name": "Jasmine Green Tea",
    "cart_id": "c-1",
    "revenue": 880,
    "userid": "advisor-amy",
    "welcome_code": "WC123",
    "fired_at": "2025-11-01T02:00:00+00:00",
}


def test_the_seed_playbooks_are_listed() -> None:
    listed = {p["key"]: p for p in list_playbooks()}
    assert set(listed) == {
        "welcome_line", "welcome_wecom", "new_user_touches", "first_purchase_day7", "dormant_wakeup",
        "dormant_wakeup_line", "churned_big_sales", "browse_no_buy", "cart_abandonment",
        "post_purchase_cross_sell", "post_review_thanks", "birthday",
    }  # fmt: skip
    for item in listed.values():
        assert item["name"]["zh-CN"] and item["name"]["en"]
        assert item["description"]["zh-CN"] and item["description"]["en"]
    assert listed["welcome_line"]["trigger"] == "event"
    assert listed["birthday"]["trigger"] == "date"
    assert listed["churned_big_sales"]["trigger"] == "schedule"
    assert listed["churned_big_sales"]["segments"] == ["churned"]


@pytest.mark.parametrize("key", KEYS)
def test_every_playbook_loads_and_validates(key: str) -> None:
    book = playbook(key)
    assert load_definition(book.source) == book.definition
    assert book.definition.key == key
    sent = {template for _step, _channel, template in book.definition.templates()}
    assert sent == {t.key for t in book.templates}  # every template is used, every send has one
    for template in book.templates:
        assert {"zh-CN", "en"} <= set(template.variants)
        assert CJK.search(str(template.variants["zh-CN"]))
        assert not CJK.search(str(template.variants["en"]))


def test_an_unknown_or_broken_playbook_is_refused_clearly() -> None:
    with pytest.raises(NotFound, match="no playbook 'nope'; playbooks are birthday, browse_no_buy"):
        playbook("nope")
    source = """
key: broken
name: {zh-CN: 坏, en: Broken}
trigger: {kind: event, event: X}
steps: [{key: hi, type: send, channel: line, template: missing}]
"""
    with pytest.raises(InvalidInput, match="step hi sends 'missing', which is not in templates"):
        load_playbook("broken", source)
    with pytest.raises(InvalidInput, match=r"playbook 'broken': steps\[0\] \(hi\).timeout"):
        load_playbook(
            "broken",
            source.replace("type: send, channel: line, template: missing", "type: wait_for, event: X"),
        )


def test_every_playbook_installs_publishes_and_renders_in_both_languages(
    engine: sa.Engine, brand: Brand
) -> None:
    world = World(engine, brand)
    world.identify("sample", {"name": "Lin"})
    pid = world.pid("sample")
    with engine.begin() as conn:
        for key in KEYS:
            journey = install_playbook(conn, world.ws, key, publish=True, now=world.now)
            assert (journey.status, journey.version, journey.playbook) == ("active", 1, key)
    with engine.connect() as conn:
        for key in KEYS:
            for template in playbook(key).templates:
                assert get_template(conn, world.ws, template.key).channel == template.channel
                for locale in ("zh-CN", "en"):
                    for event in (SAMPLE_EVENT, {}):
                        rendered = preview(
                            conn, world.ws, template.key, profile_id=pid, locale=locale, event=event
                        )
                        assert rendered.locale == locale
                        text = str(rendered.content["text"])
                        assert "{" not in text and "Lin" in text, (template.key, locale, text)
                        assert bool(CJK.search(text)) == (locale == "zh-CN"), (template.key, text)
    before = snapshot(engine)
    with engine.begin() as conn:
        for key in KEYS:
            assert install_playbook(conn, world.ws, key, publish=True, now=world.now).version == 1
    assert snapshot(engine) == before  # installing twice writes nothing


def test_a_reinstall_keeps_edited_templates_and_restores_the_draft(engine: sa.Engine, brand: Brand) -> None:
    from lifeloop.journeys.service import save_draft
    from lifeloop.messaging.templates.service import update_template

    world = World(engine, brand)
    with engine.begin() as conn:
        install_playbook(conn, world.ws, "cart_abandonment", now=world.now)
        update_template(conn, world.ws, "cart_abandonment.reminder", variants={"zh-CN": {"text": "我们的"}})
        edited = dict(playbook("cart_abandonment").source, steps=[{"key": "bye", "type": "exit"}])
        save_draft(conn, world.ws, edited, now=world.now)
        journey = install_playbook(conn, world.ws, "cart_abandonment", now=world.now)
        assert journey.status == "draft" and journey.draft["steps"][0]["key"] == "wait_order"
        assert get_template(conn, world.ws, "cart_abandonment.reminder").variants == {
            "zh-CN": {"text": "我们的"}
        }
        save_draft(conn, world.ws, dict(edited, key="birthday"), now=world.now)  # not from the playbook
        with pytest.raises(Exception, match="not installed from this playbook"):
            install_playbook(conn, world.ws, "birthday", now=world.now)


# --- end to end -------------------------------------------------------------------------------------


def _line(world: World, kind: str, user: str, event_id: str, **extra: Any) -> None:
    """A LINE webhook event as the LINE inbound records it (property channel "line", a line_user_id)."""
    event = {
        "type": kind,
        "mode": "active",
        "timestamp": int(world.now.timestamp() * 1000),
        "source": {"type": "user", "userId": user},
        "webhookEventId": event_id,
        "replyToken": "rt",
        **extra,
    }
    raw = line_event(event, "Ubot")
    assert raw is not None
    world.ingest([raw])


def _queued(world: World) -> list[tuple[str, str]]:
    """(LINE user id, template) of every queued message, in order."""
    with world.engine.connect() as conn:
        rows = conn.execute(
            sa.select(outbox.c.profile_id, outbox.c.template)
            .where(outbox.c.workspace_id == world.ws)
            .order_by(outbox.c.id)
        ).all()
        friends = {}
        for user in ("U-ann", "U-bob", "U-cat"):
            with contextlib.suppress(NotFound):
                friends[find_by_identity(conn, world.ws, "line_user_id", user)] = user
    return [(friends[r.profile_id], str(r.template)) for r in rows]


def test_welcome_line_welcomes_at_once_tells_the_story_and_follows_up_only_the_silent(
    engine: sa.Engine, brand: Brand
) -> None:
    world = World(engine, brand)
    with engine.begin() as conn:
        install_playbook(conn, world.ws, "welcome_line", publish=True, now=world.now)
    for n, user in enumerate(("U-ann", "U-bob", "U-cat")):
        _line(world, "follow", user, f"ev-follow-{n}", follow={"isUnblocked": False})
    # Queued in the transaction that placed the follow: no worker has run, and none has anything to do.
    welcome = "welcome_line.welcome"
    assert _queued(world) == [("U-ann", welcome), ("U-bob", welcome), ("U-cat", welcome)]
    assert run_until_idle(engine, now=world.now) == 0
    world.now += timedelta(minutes=30)
    _line(world, "message", "U-cat", "ev-cat-hi", message={"type": "text", "id": "m1", "text": "hi"})
    world.move("31m")  # the runs entered a moment after world.now
    story = "welcome_line.story"
    assert _queued(world)[3:] == [("U-ann", story), ("U-bob", story), ("U-cat", story)]
    world.now += timedelta(hours=1)
    _line(world, "message", "U-bob", "ev-bob-hi", message={"type": "text", "id": "m2", "text": "推荐"})
    world.move("22h")
    assert len(_queued(world)) == 6  # 23 hours after the story: nobody is followed up yet
    world.move("1h")
    assert _queued(world)[6:] == [("U-ann", "welcome_line.follow_up")]
    states = {r["profile_id"]: (r["status"], r["exit_reason"]) for r in world.runs()}
    with engine.connect() as conn:
        by_user = {
            u: states[find_by_identity(conn, world.ws, "line_user_id", u)]
            for u in ("U-ann", "U-bob", "U-cat")
        }
    assert by_user == {
        "U-ann": ("exited", "followed_up"),
        "U-bob": ("exited", "replied"),  # replied while the journey waited for it
        "U-cat": ("exited", "replied"),  # replied before the story: any interaction since the follow
    }
    # LINE redelivers a follow: the same webhook event id welcomes nobody twice.
    _line(world, "follow", "U-ann", "ev-follow-0", follow={"isUnblocked": False})
    assert len(_queued(world)) == 7


def test_cart_abandonment_reminds_a_checkout_without_its_order(engine: sa.Engine, brand: Brand) -> None:
    world = World(engine, brand)
    with engine.begin() as conn:
        install_playbook(conn, world.ws, "cart_abandonment", publish=True, now=world.now)
    world.send("ann", "Checkout Started", {"cart_id": "c-ann", "revenue": 900})
    world.send("bob", "Checkout Started", {"cart_id": "c-bob", "revenue": 450})
    world.send("bob", "Order Completed", {"cart_id": "c-bob", "revenue": 450})
    world.move("59m")
    assert world.sends() == []
    world.move("2m")
    assert world.sends() == [("ann", "line", "cart_abandonment.reminder")]
    assert world.state("ann") == [("exited", "done", "reminded")]
    assert world.state("bob") == [("exited", "wait_order", "goal")]
    with engine.connect() as conn:
        content = conn.execute(
            sa.select(outbox.c.content).where(outbox.c.workspace_id == world.ws)
        ).scalar_one()
    assert "900" in content["text"] and "CART30" in content["text"]


def test_birthday_wishes_three_days_ahead_at_ten_local(engine: sa.Engine, brand: Brand) -> None:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)  # 08:00 in Taipei
    world = World(engine, brand, now=today)
    local = today.astimezone(TAIPEI).date()
    in_three, in_five = local + timedelta(days=3), local + timedelta(days=5)
    world.identify("ann", {"name": "Ann", "birthday": f"1990-{in_three:%m-%d}"}, timezone="Asia/Taipei")
    world.identify("bob", {"name": "Bob", "birthday": f"1991-{in_five:%m-%d}"}, timezone="Asia/Taipei")
    with engine.begin() as conn:
        install_playbook(conn, world.ws, "birthday", publish=True, now=world.now)
    world.work()
    world.move("1h")
    assert world.sends() == []  # 09:00
    world.move("59m")
    assert world.sends() == []
    world.move("1m")  # 10:00 in Taipei
    assert world.sends() == [("ann", "line", "birthday.wishes")]
    world.move("1d")
    assert world.sends() == [("ann", "line", "birthday.wishes")]


def test_churned_big_sales_texts_the_churned_segment_on_the_first_of_november(
    engine: sa.Engine, brand: Brand
) -> None:
    start = datetime(2025, 9, 1, 2, tzinfo=UTC)
    world = World(engine, brand, now=start - timedelta(days=100))
    world.send("old", "Order Completed", {"revenue": 100})
    world.now = start
    world.send("new", "Order Completed", {"revenue": 100})
    with engine.begin() as conn:
        journey = install_playbook(conn, world.ws, "churned_big_sales", publish=True, now=world.now)
    assert (journey.status, journey.version) == ("active", 1)
    old = world.pid("old")
    with engine.connect() as conn:  # the segment is created with its members
        assert member_ids(conn, world.ws, "churned") == [old]
    world.move(datetime(2025, 11, 1, 1, 59, tzinfo=UTC) - world.now)
    assert world.sends() == []
    world.move("1m")  # 10:00 in Taipei on 1 November: the churned customer only
    assert world.sends() == [("old", "sms", "churned_big_sales.win_back")]


def test_first_purchase_day7_sends_the_coupon_only_without_a_repeat(engine: sa.Engine, brand: Brand) -> None:
    world = World(engine, brand)
    with engine.begin() as conn:
        install_playbook(conn, world.ws, "first_purchase_day7", publish=True, now=world.now)
    world.send("ann", "Order Completed", {"revenue": 300})
    world.send("bob", "Order Completed", {"revenue": 300})
    world.move("3d")
    world.send("bob", "Order Completed", {"revenue": 200})  # a repeat: the goal, no coupon
    world.move("4d")
    world.move("1m")
    assert world.sends() == [("ann", "line", "first_purchase_day7.coupon")]
    assert world.state("bob") == [("exited", "wait_7d", "goal")]
