"""Random concurrent earns, spends, retried awards and expiries on ONE customer's points, from many
threads each with its own PostgreSQL connection: afterwards the ledger balances exactly, every spend
beyond the balance was refused, and no reader ever saw a negative balance."""

from __future__ import annotations

import itertools
import random
import threading
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.engagement.points.ledger import award_points, balance, expire_due, spend_points
from lifeloop.engagement.points.models import points_entries
from lifeloop.errors import Conflict
from tests.conftest import Brand

from .points_helpers import NOW, assert_ledger_balances, customers

THREADS = 8
OPERATIONS = 40  # per thread


@pytest.mark.parametrize("backend", ["postgresql"])
def test_concurrent_earn_spend_and_expire_keep_one_customers_ledger_exact(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    ws = brand.workspace_id
    (ann,) = customers(client, brand, "ann")
    clock = itertools.count(1)  # a shared clock in seconds after NOW: lots expire while the test runs
    start = threading.Barrier(THREADS + 1)
    done = threading.Event()
    lock = threading.Lock()
    awarded: dict[str, int] = {}  # key → points, of every award that went through
    spent: dict[str, int] = {}
    refused: list[int] = []
    failures: list[BaseException] = []
    seen_balances: list[int] = []

    def worker(n: int) -> None:
        rng = random.Random(n)
        start.wait()
        for i in range(OPERATIONS):
            now = NOW + timedelta(seconds=next(clock))
            roll = rng.random()
            try:
                with engine.begin() as conn:
                    if roll < 0.45:
                        # some awards are retries of another thread's key, racing the first try
                        key = (
                            f"award:{rng.randrange(THREADS)}:{i}" if rng.random() < 0.3 else f"award:{n}:{i}"
                        )
                        entry = award_points(
                            conn,
                            ws,
                            ann,
                            10,
                            key=key,
                            reason="random earn",
                            now=now,
                            expires_at=now + timedelta(seconds=rng.randint(5, 120)),
                        )
                        result: tuple[str, str, int] = ("earn", entry.key, entry.points)
                    elif roll < 0.9:
                        points = rng.randint(1, 35)
                        entry = spend_points(
                            conn, ws, ann, points, key=f"spend:{n}:{i}", reason="random spend", now=now
                        )
                        result = ("spend", entry.key, entry.points)
                    else:
                        expire_due(conn, ws, ann, now=now)
                        result = ("expire", "", 0)
            except Conflict:
                with lock:
                    refused.append(n)
                continue
            except BaseException as error:  # a deadlock or a broken invariant: the test fails with it
                with lock:
                    failures.append(error)
                return
            with lock:
                if result[0] == "earn":
                    awarded[result[1]] = result[2]
                elif result[0] == "spend":
                    spent[result[1]] = result[2]

    def reader() -> None:
        start.wait()
        while not done.is_set():
            with engine.connect() as conn:
                seen_balances.append(balance(conn, ws, ann, now=NOW + timedelta(seconds=next(clock))))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    watcher = threading.Thread(target=reader)
    for t in [*threads, watcher]:
        t.start()
    for t in threads:
        t.join(timeout=300)
    done.set()
    watcher.join(timeout=60)
    assert not failures, failures[:3]
    assert refused and spent and awarded  # the mix really had both outcomes
    assert seen_balances and min(seen_balances) >= 0

    totals = assert_ledger_balances(engine, ws, ann)
    assert totals["earned"] == sum(awarded.values())  # a retried key earned once
    assert totals["spent"] == sum(spent.values())
    assert totals["expired"] > 0
    with engine.connect() as conn:
        kinds: dict[str, Any] = dict(
            conn.execute(
                sa.select(points_entries.c.kind, sa.func.count())
                .where(points_entries.c.workspace_id == ws)
                .group_by(points_entries.c.kind)
            ).all()
        )
    assert kinds["earn"] == len(awarded) and kinds["spend"] == len(spent)


def _race(count: int, work: Any) -> tuple[list[Any], list[BaseException]]:
    """``work(n)`` from ``count`` threads at once; what each returned, and what each raised."""
    start = threading.Barrier(count)
    results: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(n: int) -> None:
        start.wait()
        try:
            result = work(n)
        except BaseException as error:
            with lock:
                errors.append(error)
            return
        with lock:
            results.append(result)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results, errors


@pytest.mark.parametrize("backend", ["postgresql"])
def test_one_award_retried_at_once_from_many_connections_is_made_once(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    ws = brand.workspace_id
    (ann,) = customers(client, brand, "ann")

    def award(_n: int) -> int:
        with engine.begin() as conn:
            return award_points(conn, ws, ann, 25, key="retried", reason="gift", now=NOW).id

    ids, errors = _race(12, award)
    assert not errors and len(ids) == 12 and len(set(ids)) == 1
    assert assert_ledger_balances(engine, ws, ann) == {"balance": 25, "earned": 25, "spent": 0, "expired": 0}


@pytest.mark.parametrize("backend", ["postgresql"])
def test_concurrent_make_ups_of_one_day_pay_once(client: TestClient, engine: sa.Engine, brand: Brand) -> None:
    from lifeloop.engagement.points.checkin import checkin_streaks, make_up

    ws = brand.workspace_id
    (ann,) = customers(client, brand, "ann")
    with engine.begin() as conn:
        award_points(conn, ws, ann, 100, key="gift", reason="gift", now=NOW)

    def mend(n: int) -> int:
        with engine.begin() as conn:  # different keys: different requests for the same missed day
            return make_up(conn, ws, ann, (NOW - timedelta(days=1)).date(), key=f"mu-{n}", now=NOW).cost

    costs, errors = _race(10, mend)
    assert costs == [20]
    assert len(errors) == 9 and all(
        isinstance(e, Conflict) and "already checked in" in e.message for e in errors
    )
    assert assert_ledger_balances(engine, ws, ann)["balance"] == 80
    with engine.connect() as conn:
        assert checkin_streaks(conn, ws, [ann], now=NOW) == {ann: 1}
