"""Journey steps of the engagement programme: issue a coupon, award points, create the advisor's task —
each once per step of a run, a refused coupon an outcome the run goes past, unknown templates refused."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from lifeloop.engagement.advisors.service import create_advisor
from lifeloop.engagement.advisors.tasks import list_tasks
from lifeloop.engagement.coupons.service import coupons_of
from lifeloop.engagement.coupons.templates import create_template
from lifeloop.engagement.points.ledger import balance
from lifeloop.errors import InvalidInput
from lifeloop.journeys import service
from lifeloop.store.engine import connect
from tests.conftest import Brand
from tests.journeys.world import World

GIFT = """\
key: vip_gift
name: {zh-CN: 贵宾礼, en: VIP gift}
trigger: {kind: manual}
steps:
  - {key: coupon, type: issue_coupon, template: vip_tea}
  - {key: points, type: award_points, points: 200, reason: vip_welcome, expires: 30d}
  - {key: call, type: advisor_task, title: Call to welcome the new VIP, due: 24h, note: Offer a tasting}
"""


@pytest.fixture
def world(engine: sa.Engine, brand: Brand) -> World:
    world = World(engine, brand)
    with engine.begin() as conn:
        create_template(conn, world.ws, "vip_tea", {"kind": "fixed", "value": 100, "valid_days": 14,
                                                   "total_limit": 2}, now=world.now)  # fmt: skip
        create_advisor(conn, world.ws, name="Mei", wecom_userid="mei", now=world.now)
    for user in ("ann", "bob", "cat"):
        world.identify(user, {"name": user})
    return world


def test_each_step_acts_once_per_run_and_a_refused_coupon_does_not_stop_the_run(world: World) -> None:
    world.journey(GIFT)
    assert world.enter("vip_gift", ["ann", "bob", "cat"]) == 3
    world.work()
    with connect(world.engine) as conn:
        held = {u: coupons_of(conn, world.ws, world.pid(u), now=world.now) for u in ("ann", "bob", "cat")}
        points = {u: balance(conn, world.ws, world.pid(u), now=world.now) for u in ("ann", "bob", "cat")}
        tasks = list_tasks(conn, world.ws, now=world.now)
    assert sorted(len(c) for c in held.values()) == [0, 1, 1]  # the template's total limit is two
    assert points == {"ann": 200, "bob": 200, "cat": 200}
    assert sorted(t.profile_id for t in tasks) == sorted(world.pid(u) for u in ("ann", "bob", "cat"))
    assert {t.title for t in tasks} == {"Call to welcome the new VIP"} and all(t.due_at for t in tasks)
    outcomes = sorted(
        outcome for u in ("ann", "bob", "cat") for step, _k, outcome in world.log(u) if step == "coupon"
    )
    assert outcomes == ["issued", "issued", "refused:limit_reached"]
    refused = next(u for u in held if not held[u])
    assert [step for step, _k, _o in world.log(refused)] == ["coupon", "points", "call"]
    assert len(world.events(refused, "Points Earned")) == 1
    assert len(world.events("ann", "Advisor Task Created")) == 1

    world.work()  # nothing is due: nothing more is issued, awarded or asked
    with connect(world.engine) as conn:
        assert len(list_tasks(conn, world.ws, now=world.now)) == 3
        assert balance(conn, world.ws, world.pid("ann"), now=world.now) == 200


def test_a_coupon_template_the_workspace_lacks_is_refused_at_publish(world: World) -> None:
    with world.engine.begin() as conn:
        service.save_draft(conn, world.ws, GIFT.replace("vip_tea", "no_such"), now=world.now)
    with pytest.raises(InvalidInput, match="no coupon template 'no_such'"), world.engine.begin() as conn:
        service.publish(conn, world.ws, "vip_gift", now=world.now)
