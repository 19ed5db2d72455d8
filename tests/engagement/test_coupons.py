"""Coupons through the service: templates, issuing with limits, validity windows, redeeming once,
idempotent retries, the expiry sweep and its events, and redemption from an ingested order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from lifeloop.engagement.coupons import hooks
from lifeloop.engagement.coupons.models import coupon_redemptions, coupon_templates, coupons
from lifeloop.engagement.coupons.service import (
    CouponRefused,
    coupons_of,
    issue_coupon,
    redeem_coupon,
    unused_coupons,
)
from lifeloop.engagement.coupons.templates import create_template, update_template
from lifeloop.engagement.sweeps import sweep as engagement_sweep
from lifeloop.errors import Conflict, InvalidInput, NotFound
from lifeloop.events.messages import parse_message
from lifeloop.events.models import events
from lifeloop.events.service import ingest
from lifeloop.profiles.resolver import resolve_pending
from lifeloop.profiles.service import find_by_identity
from lifeloop.store.schema import utcnow
from lifeloop.workspaces.models import SourceKey
from tests.conftest import Brand, snapshot

# 2026-12-07 10:00 in Asia/Taipei (the brand's zone, UTC+8).
NOW = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)


# --- helpers shared with the API and concurrency tests -----------------------------------------------


def send(engine: sa.Engine, brand: Brand, messages: list[dict[str, Any]], *, now: datetime = NOW) -> None:
    """Ingest messages as a source would and place them (the resolver reacts at ``now``)."""
    key = SourceKey(workspace_id=brand.workspace_id, source_id=brand.source_id)
    ingest(engine, key, [parse_message(m, received_at=utcnow()) for m in messages])
    resolve_pending(engine, now=now)


def customers(engine: sa.Engine, brand: Brand, *users: str) -> list[int]:
    send(engine, brand, [{"type": "identify", "userId": u, "messageId": f"id-{u}"} for u in users])
    with engine.connect() as conn:
        return [find_by_identity(conn, brand.workspace_id, "user_id", u) for u in users]


def template(engine: sa.Engine, brand: Brand, key: str, **spec: Any) -> None:
    with engine.begin() as conn:
        create_template(conn, brand.workspace_id, key, {"name": key, **spec}, now=NOW)


def issue(engine: sa.Engine, brand: Brand, pid: int, key: str, *, request: str, now: datetime = NOW) -> Any:
    with engine.begin() as conn:
        return issue_coupon(conn, brand.workspace_id, pid, key, key=request, now=now)


def redeem(engine: sa.Engine, brand: Brand, code: str, pid: int, *, request: str, **kw: Any) -> Any:
    kw.setdefault("now", NOW)
    with engine.begin() as conn:
        return redeem_coupon(conn, brand.workspace_id, code, profile_id=pid, key=request, **kw)


def programme_events(engine: sa.Engine, brand: Brand, name: str) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(events.c.profile_id, events.c.properties, events.c.timestamp)
                .where(events.c.workspace_id == brand.workspace_id, events.c.event == name)
                .order_by(events.c.id)
            )
        )


def coupon_rows(engine: sa.Engine, brand: Brand) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(coupons).where(coupons.c.workspace_id == brand.workspace_id)))


# --- tests -------------------------------------------------------------------------------------------


def test_a_fixed_coupon_is_issued_redeemed_once_with_its_events(engine: sa.Engine, brand: Brand) -> None:
    (ann,) = customers(engine, brand, "ann")
    template(engine, brand, "welcome", kind="fixed", value=50, valid_days=7)
    coupon = issue(engine, brand, ann, "welcome", request="welcome:ann")
    assert coupon.status == "issued" and coupon.kind == "fixed" and coupon.value == 50
    assert len(coupon.code) == 14 and coupon.code.count("-") == 2  # XXXX-XXXX-XXXX
    issued = programme_events(engine, brand, "Coupon Issued")
    assert [(e.profile_id, e.properties["template"], e.properties["code"]) for e in issued] == [
        (ann, "welcome", coupon.code)
    ]
    assert issued[0].properties["coupon_id"] == coupon.id and issued[0].properties["value"] == 50

    # Typed in lower case, without dashes, with an O for a 0: still the same code.
    typed = coupon.code.replace("-", "").lower().replace("0", "o")
    redemption = redeem(engine, brand, typed, ann, request="order-1", order_id="o-1", order_total=30)
    assert redemption.discount == 30 and redemption.coupon.status == "redeemed"  # never more than the order
    redeemed = programme_events(engine, brand, "Coupon Redeemed")
    assert len(redeemed) == 1
    assert redeemed[0].properties["order_id"] == "o-1" and redeemed[0].properties["discount"] == 30

    with pytest.raises(CouponRefused) as refused:
        redeem(engine, brand, coupon.code, ann, request="order-2", order_id="o-2", order_total=80)
    assert refused.value.code == "coupon_redeemed" and "already redeemed" in refused.value.message
    assert len(programme_events(engine, brand, "Coupon Redeemed")) == 1


def test_the_same_key_returns_the_first_result_and_changes_nothing(engine: sa.Engine, brand: Brand) -> None:
    (ann,) = customers(engine, brand, "ann")
    template(engine, brand, "day7", kind="threshold", value=100, threshold=500, valid_days=7)
    first = issue(engine, brand, ann, "day7", request="day7:ann")
    before = snapshot(engine)
    again = issue(engine, brand, ann, "day7", request="day7:ann", now=NOW + timedelta(hours=1))
    assert again == first
    assert snapshot(engine) == before

    redemption = redeem(engine, brand, first.code, ann, request="pay-9", order_id="o-9", order_total=520)
    assert redemption.discount == 100
    before = snapshot(engine)
    retried = redeem(engine, brand, first.code, ann, request="pay-9", order_id="o-9", order_total=520)
    assert retried.id == redemption.id and retried.discount == 100 and retried.coupon.status == "redeemed"
    assert snapshot(engine) == before

    # A key already used for something else is refused, not silently re-used.
    template(engine, brand, "other", kind="free_shipping", valid_days=3)
    before = snapshot(engine)
    with pytest.raises(Conflict, match="idempotency key"):
        issue(engine, brand, ann, "other", request="day7:ann")
    assert snapshot(engine) == before


def test_per_user_and_total_limits(engine: sa.Engine, brand: Brand) -> None:
    ann, bob, cat = customers(engine, brand, "ann", "bob", "cat")
    template(
        engine, brand, "vip", kind="percent", value=15, max_discount=200, per_user_limit=2, total_limit=3
    )
    issue(engine, brand, ann, "vip", request="1")
    issue(engine, brand, ann, "vip", request="2")
    before = snapshot(engine)
    with pytest.raises(CouponRefused) as refused:
        issue(engine, brand, ann, "vip", request="3")
    assert refused.value.code == "coupon_limit_reached" and "at most 2 each" in refused.value.message
    assert snapshot(engine) == before
    issue(engine, brand, bob, "vip", request="4")
    with pytest.raises(CouponRefused, match="all 3 coupons"):
        issue(engine, brand, cat, "vip", request="5")
    with engine.connect() as conn:
        count = conn.execute(
            sa.select(coupon_templates.c.issued_count).where(
                coupon_templates.c.workspace_id == brand.workspace_id
            )
        ).scalar_one()
        assert count == 3
        assert unused_coupons(conn, brand.workspace_id, [ann, bob, cat], now=NOW) == {ann: 2, bob: 1, cat: 0}
        assert unused_coupons(conn, brand.workspace_id, [ann], now=NOW, template_key="nope") == {ann: 0}


def test_percent_discount_is_capped_and_free_shipping_and_gift_take_nothing_off(
    engine: sa.Engine, brand: Brand
) -> None:
    (ann,) = customers(engine, brand, "ann")
    template(engine, brand, "pct", kind="percent", value=20, max_discount=50)
    template(engine, brand, "ship", kind="free_shipping", threshold=300)
    template(engine, brand, "mug", kind="gift", gift="Lifeloop mug")
    pct = issue(engine, brand, ann, "pct", request="a")
    assert redeem(engine, brand, pct.code, ann, request="r1", order_total=100).discount == 20
    pct2 = issue(engine, brand, ann, "pct", request="b")
    assert redeem(engine, brand, pct2.code, ann, request="r2", order_total=1000).discount == 50
    ship = issue(engine, brand, ann, "ship", request="c")
    with pytest.raises(CouponRefused) as below:
        redeem(engine, brand, ship.code, ann, request="r3", order_total=299.99)
    assert below.value.code == "coupon_below_threshold" and "at least 300" in below.value.message
    assert redeem(engine, brand, ship.code, ann, request="r4", order_total=300).discount is None
    mug = issue(engine, brand, ann, "mug", request="d")
    assert mug.gift == "Lifeloop mug" and redeem(engine, brand, mug.code, ann, request="r5").discount is None


def test_validity_n_days_from_issue_in_the_workspace_zone(engine: sa.Engine, brand: Brand) -> None:
    (ann,) = customers(engine, brand, "ann")
    # Issued 2026-12-07 10:00 Taipei; 3 days: through 12-09, until 12-10 00:00 Taipei (12-09 16:00 UTC).
    template(engine, brand, "new3", kind="fixed", value=10, valid_days=3)
    coupon = issue(engine, brand, ann, "new3", request="a")
    assert coupon.starts_at == NOW
    assert coupon.expires_at == datetime(2026, 12, 9, 16, 0, tzinfo=UTC)
    with pytest.raises(CouponRefused) as late:
        redeem(engine, brand, coupon.code, ann, request="r", now=datetime(2026, 12, 9, 16, 0, tzinfo=UTC))
    assert late.value.code == "coupon_expired"
    ok = redeem(engine, brand, coupon.code, ann, request="r", now=datetime(2026, 12, 9, 15, 59, tzinfo=UTC))
    assert ok.coupon.status == "redeemed"

    # Starting 2 days after issue, for 7 days: 12-09 00:00 Taipei to 12-16 00:00 Taipei.
    template(engine, brand, "later", kind="fixed", value=10, valid_days=7, starts_after_days=2)
    later = issue(engine, brand, ann, "later", request="b")
    assert later.starts_at == datetime(2026, 12, 8, 16, 0, tzinfo=UTC)
    assert later.expires_at == datetime(2026, 12, 15, 16, 0, tzinfo=UTC)
    with pytest.raises(CouponRefused) as early:
        redeem(engine, brand, later.code, ann, request="r2")
    assert early.value.code == "coupon_not_started"
    assert redeem(engine, brand, later.code, ann, request="r2", now=later.starts_at).discount == 10


def test_absolute_validity(engine: sa.Engine, brand: Brand) -> None:
    (ann,) = customers(engine, brand, "ann")
    template(
        engine,
        brand,
        "dec",
        kind="fixed",
        value=10,
        valid_from="2026-12-10T00:00:00+08:00",
        valid_until="2026-12-31T23:59:59+08:00",
    )
    coupon = issue(engine, brand, ann, "dec", request="a")
    assert coupon.starts_at == datetime(2026, 12, 9, 16, 0, tzinfo=UTC)
    assert coupon.expires_at == datetime(2026, 12, 31, 15, 59, 59, tzinfo=UTC)
    with pytest.raises(CouponRefused, match="can be used from"):
        redeem(engine, brand, coupon.code, ann, request="r")
    after = datetime(2027, 1, 1, tzinfo=UTC)
    with pytest.raises(CouponRefused, match="expired"):
        redeem(engine, brand, coupon.code, ann, request="r", now=after)
    with pytest.raises(CouponRefused) as ended:  # nothing is issued after the end either
        issue(engine, brand, ann, "dec", request="b", now=after)
    assert ended.value.code == "coupon_expired"
    assert (
        redeem(engine, brand, coupon.code, ann, request="r", now=coupon.starts_at).coupon.status == "redeemed"
    )


def test_a_shared_code_redeems_each_customers_own_coupon(engine: sa.Engine, brand: Brand) -> None:
    ann, bob, cat = customers(engine, brand, "ann", "bob", "cat")
    template(engine, brand, "xmas", kind="fixed", value=20, code_mode="shared", shared_code="xmas-20")
    a = issue(engine, brand, ann, "xmas", request="a")
    b = issue(engine, brand, bob, "xmas", request="b")
    assert a.code == b.code == "XMAS20" and a.id != b.id
    assert redeem(engine, brand, "Xmas 20", ann, request="ra").coupon.id == a.id
    assert redeem(engine, brand, "XMAS20", bob, request="rb").coupon.id == b.id
    with pytest.raises(NotFound, match="holds no coupon"):  # typing the code is not enough: cat has none
        redeem(engine, brand, "XMAS20", cat, request="rc")
    with pytest.raises(CouponRefused, match="already redeemed"):
        redeem(engine, brand, "XMAS20", ann, request="ra2")


def test_another_customers_code_and_unknown_codes_are_refused(engine: sa.Engine, brand: Brand) -> None:
    ann, bob = customers(engine, brand, "ann", "bob")
    template(engine, brand, "t", kind="fixed", value=5)
    coupon = issue(engine, brand, ann, "t", request="a")
    before = snapshot(engine)
    with pytest.raises(NotFound):
        redeem(engine, brand, coupon.code, bob, request="r")
    with pytest.raises(NotFound):
        redeem(engine, brand, "AAAA-BBBB-CCCC", ann, request="r")
    with pytest.raises(NotFound, match="no coupon template"):
        issue(engine, brand, ann, "nope", request="x")
    with pytest.raises(NotFound, match="no profile"):
        issue(engine, brand, 999_999, "t", request="x")
    with pytest.raises(InvalidInput, match="order_total"):
        redeem(engine, brand, coupon.code, ann, request="r", order_total=-1)
    assert snapshot(engine) == before


def test_template_checks_updates_and_archiving(engine: sa.Engine, brand: Brand) -> None:
    (ann,) = customers(engine, brand, "ann")
    bad = [
        ("BAD KEY", {"kind": "fixed", "value": 1}, "key"),
        ("k", {"kind": "coupon"}, "kind"),
        ("k", {"kind": "fixed"}, "value"),
        ("k", {"kind": "percent", "value": 100}, "value"),
        ("k", {"kind": "threshold", "value": 50}, "threshold"),
        ("k", {"kind": "threshold", "value": 50, "threshold": 20}, "value"),
        ("k", {"kind": "gift"}, "gift"),
        (
            "k",
            {"kind": "fixed", "value": 1, "valid_days": 3, "valid_until": "2027-01-01T00:00:00+08:00"},
            "valid_days",
        ),
        ("k", {"kind": "fixed", "value": 1, "valid_until": "2027-01-01T00:00:00"}, "valid_until"),
        ("k", {"kind": "fixed", "value": 1, "code_mode": "shared"}, "shared_code"),
        ("k", {"kind": "fixed", "value": 1, "per_user_limit": 0}, "per_user_limit"),
    ]
    before = snapshot(engine)
    for key, spec, field in bad:
        with pytest.raises(InvalidInput) as error, engine.begin() as conn:
            create_template(conn, brand.workspace_id, key, spec, now=NOW)
        assert error.value.field == field, (spec, error.value.message)
    assert snapshot(engine) == before

    template(engine, brand, "t", kind="fixed", value=5, valid_days=3, total_limit=5)
    issue(engine, brand, ann, "t", request="a")
    issue(engine, brand, ann, "t", request="b")
    with engine.begin() as conn:
        changed = update_template(
            conn, brand.workspace_id, "t", {"valid_days": 10, "name": "Longer"}, now=NOW
        )
    assert changed.valid_days == 10 and changed.name == "Longer" and changed.value == 5
    with pytest.raises(InvalidInput, match="cannot change"), engine.begin() as conn:
        update_template(conn, brand.workspace_id, "t", {"value": 500}, now=NOW)
    with pytest.raises(InvalidInput, match="below the 2"), engine.begin() as conn:
        update_template(conn, brand.workspace_id, "t", {"total_limit": 1}, now=NOW)
    held = issue(engine, brand, ann, "t", request="c")
    assert held.expires_at == datetime(2026, 12, 16, 16, 0, tzinfo=UTC)  # the new validity, from now on

    from lifeloop.engagement.coupons.templates import archive_template

    with engine.begin() as conn:
        archive_template(conn, brand.workspace_id, "t", now=NOW)
    with pytest.raises(CouponRefused, match="archived"):
        issue(engine, brand, ann, "t", request="d")
    with pytest.raises(CouponRefused, match="archived"):
        redeem(engine, brand, held.code, ann, request="r")


def test_the_sweep_expires_in_batches_with_events(
    engine: sa.Engine, brand: Brand, monkeypatch: pytest.MonkeyPatch
) -> None:
    ann, bob = customers(engine, brand, "ann", "bob")
    template(engine, brand, "short", kind="fixed", value=5, valid_days=1)
    template(engine, brand, "long", kind="fixed", value=5, valid_days=30)
    shorts = [issue(engine, brand, pid, "short", request=f"s{i}") for i, pid in enumerate([ann, bob] * 3)]
    kept = issue(engine, brand, ann, "long", request="l")
    redeem(engine, brand, shorts[0].code, ann, request="r")  # redeemed: never expires
    monkeypatch.setattr(hooks, "SWEEP_BATCH", 2)
    assert hooks.sweep(engine, NOW) == 0  # nothing is due yet
    later = NOW + timedelta(days=2)
    assert hooks.sweep(engine, later) == 5  # in batches of 2
    assert hooks.sweep(engine, later) == 0
    expired = programme_events(engine, brand, "Coupon Expired")
    assert sorted(e.properties["coupon_id"] for e in expired) == sorted(c.id for c in shorts[1:])
    assert all(e.timestamp == later and e.properties["template"] == "short" for e in expired)
    statuses = {r.id: r.status for r in coupon_rows(engine, brand)}
    assert statuses[shorts[0].id] == "redeemed" and statuses[kept.id] == "issued"
    assert {statuses[c.id] for c in shorts[1:]} == {"expired"}
    with engine.connect() as conn:
        mine = coupons_of(conn, brand.workspace_id, ann, now=later)
    assert [c.status for c in mine] == ["issued", "expired", "expired", "redeemed"]
    # Before the sweep comes, a coupon past its end already reads as expired.
    much_later = NOW + timedelta(days=40)
    with engine.connect() as conn:
        assert coupons_of(conn, brand.workspace_id, ann, now=much_later)[0].status == "expired"
    # The programme's sweep (the worker's) expires it.
    engagement_sweep(engine, much_later)
    assert {r.id: r.status for r in coupon_rows(engine, brand)}[kept.id] == "expired"
    assert len(programme_events(engine, brand, "Coupon Expired")) == 6


def order(user: str, message_id: str, **properties: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "userId": user,
        "event": "Order Completed",
        "messageId": message_id,
        "properties": properties,
    }


def test_an_ingested_order_with_a_coupon_code_redeems_it_once(engine: sa.Engine, brand: Brand) -> None:
    ann, _bob = customers(engine, brand, "ann", "bob")
    template(engine, brand, "day7", kind="threshold", value=100, threshold=500, valid_days=7)
    coupon = issue(engine, brand, ann, "day7", request="a")
    # total has the discount taken off (Segment): 420 + 100 = 520 before it, over the threshold.
    send(engine, brand, [order("ann", "o-1", order_id="1001", total=420, discount=100, coupon=coupon.code)])
    redeemed = programme_events(engine, brand, "Coupon Redeemed")
    assert len(redeemed) == 1 and redeemed[0].profile_id == ann
    assert redeemed[0].properties["order_id"] == "1001" and redeemed[0].properties["discount"] == 100
    with engine.connect() as conn:
        (row,) = conn.execute(
            sa.select(coupon_redemptions).where(coupon_redemptions.c.workspace_id == brand.workspace_id)
        ).all()
    assert row.key == "order:o-1" and row.order_total == 520
    assert {r.id: r.status for r in coupon_rows(engine, brand)}[coupon.id] == "redeemed"

    # The same order sent again is a duplicate; another order with the same code redeems nothing.
    send(engine, brand, [order("ann", "o-1", order_id="1001", total=420, discount=100, coupon=coupon.code)])
    send(engine, brand, [order("ann", "o-2", order_id="1002", total=900, coupon=coupon.code)])
    assert len(programme_events(engine, brand, "Coupon Redeemed")) == 1

    # A message id as long as ingest takes still makes a key of its own.
    second = issue(engine, brand, ann, "day7", request="b")
    send(engine, brand, [order("ann", "m" * 255, order_id="1003", total=600, coupon=second.code)])
    assert len(programme_events(engine, brand, "Coupon Redeemed")) == 2


def test_an_order_with_a_code_that_cannot_be_redeemed_is_placed_all_the_same(
    engine: sa.Engine, brand: Brand, caplog: pytest.LogCaptureFixture
) -> None:
    ann, _bob = customers(engine, brand, "ann", "bob")
    template(engine, brand, "day7", kind="threshold", value=100, threshold=500, valid_days=7)
    coupon = issue(engine, brand, ann, "day7", request="a")
    caplog.set_level("INFO", logger="lifeloop.engagement.coupons.hooks")
    send(
        engine,
        brand,
        [
            order("ann", "o-1", order_id="1", total=300, coupon=coupon.code),  # below the threshold
            order("bob", "o-2", order_id="2", total=900, coupon=coupon.code),  # ann's coupon, not bob's
            order("ann", "o-3", order_id="3", total=900, coupon="NO-SUCH-CODE"),
            order("ann", "o-4", order_id="4", revenue="lots", coupon=coupon.code),  # no usable total
        ],
    )
    with engine.connect() as conn:
        placed = conn.execute(
            sa.select(sa.func.count()).where(
                events.c.workspace_id == brand.workspace_id,
                events.c.event == "Order Completed",
                events.c.profile_id.is_not(None),
            )
        ).scalar_one()
    assert placed == 4
    assert programme_events(engine, brand, "Coupon Redeemed") == []
    assert {r.id: r.status for r in coupon_rows(engine, brand)}[coupon.id] == "issued"
    notes = [r.getMessage() for r in caplog.records if r.name == "lifeloop.engagement.coupons.hooks"]
    assert len(notes) == 4 and "at least 500" in notes[0] and "holds no coupon" in notes[1]


def test_coupons_follow_a_merged_profile(engine: sa.Engine, brand: Brand) -> None:
    (ann,) = customers(engine, brand, "ann")
    send(engine, brand, [{"type": "track", "anonymousId": "device-1", "event": "Viewed", "messageId": "v-1"}])
    with engine.connect() as conn:
        visitor = find_by_identity(conn, brand.workspace_id, "anonymous_id", "device-1")
    template(engine, brand, "first", kind="fixed", value=30, per_user_limit=1)
    coupon = issue(engine, brand, visitor, "first", request="visitor")
    # The visitor signs in as ann: the anonymous profile merges into ann's, and so does its coupon.
    send(
        engine, brand, [{"type": "identify", "userId": "ann", "anonymousId": "device-1", "messageId": "i-2"}]
    )
    with engine.connect() as conn:
        assert find_by_identity(conn, brand.workspace_id, "anonymous_id", "device-1") == ann
        assert [c.id for c in coupons_of(conn, brand.workspace_id, ann, now=NOW)] == [coupon.id]
        assert [c.id for c in coupons_of(conn, brand.workspace_id, visitor, now=NOW)] == [coupon.id]
        assert unused_coupons(conn, brand.workspace_id, [ann], now=NOW) == {ann: 1}
    with pytest.raises(CouponRefused, match="at most 1 each"):  # the merged coupon counts for ann
        issue(engine, brand, ann, "first", request="ann")
    assert redeem(engine, brand, coupon.code, ann, request="r").coupon.id == coupon.id
