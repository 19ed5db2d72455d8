"""Coupons under concurrent requests on PostgreSQL: each thread has its own connection and transaction,
and all are released at once by a barrier."""

from __future__ import annotations

import fcntl
import tempfile
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from lifeloop.config import Settings
from lifeloop.engagement.coupons.models import coupon_redemptions, coupon_templates, coupons
from lifeloop.engagement.coupons.service import CouponRefused, issue_coupon, redeem_coupon
from lifeloop.events.messages import parse_message
from lifeloop.events.service import ingest
from lifeloop.profiles.resolver import resolve_pending
from lifeloop.store.engine import create_store_engine
from lifeloop.store.schema import utcnow
from lifeloop.workspaces.models import SourceKey
from tests.conftest import Brand

from .test_coupons import NOW, customers, issue, programme_events, template

THREADS = 50
_LOCK = Path(tempfile.gettempdir()) / "lifeloop-coupon-concurrency.lock"


@pytest.fixture
def backend() -> str:
    return "postgresql"


def all_at_once(settings: Settings, work: Callable[[sa.Connection, int], Any], n: int = THREADS) -> list[Any]:
    """Run ``work(conn, i)`` in ``n`` threads, each in its own transaction on its own connection, opened
    first and released together; each thread's result, or the reason it was refused."""
    engine = create_store_engine(settings, poolclass=NullPool)
    barrier = threading.Barrier(n)

    def one(i: int) -> Any:
        try:
            conn = engine.connect()
        except Exception:
            barrier.abort()  # the others fail at once rather than wait for this one
            raise
        with conn:
            barrier.wait(timeout=60)
            try:
                with conn.begin():
                    return work(conn, i)
            except CouponRefused as refused:
                return refused.code

    # One such test at a time across test processes: fifty connections each, on a server with 100.
    with _LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with ThreadPoolExecutor(max_workers=n) as pool:
                return list(pool.map(one, range(n)))
        finally:
            engine.dispose()


def count(engine: sa.Engine, table: sa.Table, brand: Brand) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).select_from(table).where(table.c.workspace_id == brand.workspace_id)
        ).scalar_one()


def test_fifty_parallel_redemptions_of_one_coupon_redeem_it_once(
    settings: Settings, engine: sa.Engine, brand: Brand
) -> None:
    (ann,) = customers(engine, brand, "ann")
    template(engine, brand, "once", kind="fixed", value=50)
    coupon = issue(engine, brand, ann, "once", request="a")

    def redeem(conn: sa.Connection, i: int) -> Any:
        return redeem_coupon(
            conn,
            brand.workspace_id,
            coupon.code,
            profile_id=ann,
            key=f"checkout-{i}",
            now=NOW,
            order_total=100,
        ).id

    results = all_at_once(settings, redeem)
    refused = Counter(r for r in results if isinstance(r, str))
    assert refused == {"coupon_redeemed": THREADS - 1}
    assert len([r for r in results if isinstance(r, int)]) == 1
    assert count(engine, coupon_redemptions, brand) == 1
    assert len(programme_events(engine, brand, "Coupon Redeemed")) == 1


def test_parallel_retries_of_one_redemption_all_answer_with_it(
    settings: Settings, engine: sa.Engine, brand: Brand
) -> None:
    (ann,) = customers(engine, brand, "ann")
    template(engine, brand, "once", kind="fixed", value=50)
    coupon = issue(engine, brand, ann, "once", request="a")

    def redeem(conn: sa.Connection, _i: int) -> Any:
        return redeem_coupon(
            conn, brand.workspace_id, coupon.code, profile_id=ann, key="checkout", now=NOW
        ).id

    results = all_at_once(settings, redeem, n=20)
    assert len(set(results)) == 1 and isinstance(results[0], int)
    assert count(engine, coupon_redemptions, brand) == 1
    assert len(programme_events(engine, brand, "Coupon Redeemed")) == 1


def test_fifty_parallel_issues_against_a_total_limit_of_ten_issue_ten(
    settings: Settings, engine: sa.Engine, brand: Brand
) -> None:
    pids = customers(engine, brand, *[f"u{i}" for i in range(5)])
    template(engine, brand, "flash", kind="fixed", value=5, total_limit=10)

    def issue_one(conn: sa.Connection, i: int) -> Any:
        return issue_coupon(conn, brand.workspace_id, pids[i % 5], "flash", key=f"flash-{i}", now=NOW).id

    results = all_at_once(settings, issue_one)
    assert Counter(r for r in results if isinstance(r, str)) == {"coupon_limit_reached": THREADS - 10}
    assert len({r for r in results if isinstance(r, int)}) == 10
    assert count(engine, coupons, brand) == 10
    assert len(programme_events(engine, brand, "Coupon Issued")) == 10
    with engine.connect() as conn:
        issued = conn.execute(
            sa.select(coupon_templates.c.issued_count).where(
                coupon_templates.c.workspace_id == brand.workspace_id
            )
        ).scalar_one()
    assert issued == 10


def test_parallel_issues_to_one_customer_hold_the_per_user_limit_and_keys(
    settings: Settings, engine: sa.Engine, brand: Brand
) -> None:
    (ann,) = customers(engine, brand, "ann")
    template(engine, brand, "two", kind="fixed", value=5, per_user_limit=2)

    def issue_one(conn: sa.Connection, i: int) -> Any:
        # Half the requests are retries of one of two keys.
        key = f"k{i}" if i % 2 else f"retry-{i % 4}"
        return issue_coupon(conn, brand.workspace_id, ann, "two", key=key, now=NOW).id

    results = all_at_once(settings, issue_one, n=20)
    issued = {r for r in results if isinstance(r, int)}
    assert len(issued) == 2 and count(engine, coupons, brand) == 2
    assert set(results) - issued == {"coupon_limit_reached"}
    assert len(programme_events(engine, brand, "Coupon Issued")) == 2


def test_an_order_event_and_api_redemptions_racing_for_one_coupon_redeem_it_once(
    settings: Settings, engine: sa.Engine, brand: Brand
) -> None:
    (ann,) = customers(engine, brand, "ann")
    template(engine, brand, "once", kind="fixed", value=50)
    coupon = issue(engine, brand, ann, "once", request="a")
    order = {"type": "track", "userId": "ann", "event": "Order Completed", "messageId": "order-1",
             "properties": {"order_id": "1", "total": 200, "coupon": coupon.code}}  # fmt: skip
    key = SourceKey(workspace_id=brand.workspace_id, source_id=brand.source_id)
    ingest(engine, key, [parse_message(order, received_at=utcnow())])  # waiting for the resolver

    def race(conn: sa.Connection, i: int) -> Any:
        if i == 0:  # the resolver places the order (retrying as it does if a writer collided with it)
            return f"placed {resolve_pending(engine, now=NOW)}"
        return redeem_coupon(
            conn, brand.workspace_id, coupon.code, profile_id=ann, key=f"api-{i}", now=NOW
        ).id

    results = all_at_once(settings, race, n=20)
    assert results[0] == "placed 1"
    assert count(engine, coupon_redemptions, brand) == 1
    assert len(programme_events(engine, brand, "Coupon Redeemed")) == 1
    winners = [r for r in results[1:] if isinstance(r, int)]
    assert len(winners) <= 1 and set(results[1:]) - set(winners) <= {"coupon_redeemed"}
