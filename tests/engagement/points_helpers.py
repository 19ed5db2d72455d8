"""Shared by the points and check-in tests: customers made through the real ingest path, and the check
that a customer's ledger balances every way it can be added up."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.engagement.points.models import points_accounts, points_allocations, points_entries, points_lots
from lifeloop.profiles.resolver import resolve_pending
from lifeloop.profiles.service import find_by_identity
from tests.conftest import Brand

# 2026-12-07 10:00 in Asia/Taipei (the test brand's zone, UTC+8).
NOW = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)


def ingest(client: TestClient, brand: Brand, messages: list[dict[str, Any]], *, now: datetime = NOW) -> None:
    """Send messages to the ingest API as a brand's source does, then place them at ``now``."""
    answer = client.post("/v1/batch", json={"batch": messages}, auth=brand.auth)
    assert answer.status_code == 200, answer.text
    resolve_pending(client.app.state.engine, now=now)  # type: ignore[attr-defined]


def track(user: str, event: str, message_id: str, at: datetime = NOW, **properties: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "userId": user,
        "event": event,
        "properties": properties,
        "messageId": message_id,
        "timestamp": at.isoformat(),
    }


def identify(user: str, message_id: str, at: datetime = NOW, **traits: Any) -> dict[str, Any]:
    return {
        "type": "identify",
        "userId": user,
        "traits": traits,
        "messageId": message_id,
        "timestamp": at.isoformat(),
    }


def customers(client: TestClient, brand: Brand, *users: str, now: datetime = NOW) -> list[int]:
    """Profiles for ``users``, first seen at ``now``."""
    ingest(client, brand, [identify(u, f"hello-{u}", now) for u in users], now=now)
    return [pid(client, brand, u) for u in users]


def pid(client: TestClient, brand: Brand, user: str) -> int:
    with client.app.state.engine.connect() as conn:  # type: ignore[attr-defined]
        return find_by_identity(conn, brand.workspace_id, "user_id", user)


def assert_ledger_balances(
    engine: sa.Engine, workspace_id: int, profile_id: int, *, chain: bool = True
) -> dict[str, int]:
    """balance = Σ lots remaining = earned − spent − expired; the entries add up to the totals; each lot's
    used points are its allocations; each entry's balance_after follows from the one before. Returns
    the account's totals. ``chain`` False for an account that took in a merged profile's entries, whose
    balance_after follows its own account's."""
    with engine.connect() as conn:
        ws = points_accounts.c.workspace_id == workspace_id
        account = conn.execute(
            sa.select(points_accounts).where(ws, points_accounts.c.profile_id == profile_id)
        ).one()
        lots = conn.execute(
            sa.select(points_lots).where(
                points_lots.c.workspace_id == workspace_id, points_lots.c.profile_id == profile_id
            )
        ).all()
        entries = conn.execute(
            sa.select(points_entries)
            .where(points_entries.c.workspace_id == workspace_id, points_entries.c.profile_id == profile_id)
            .order_by(points_entries.c.id)
        ).all()
        allocations = conn.execute(
            sa.select(points_allocations).where(
                points_allocations.c.workspace_id == workspace_id,
                points_allocations.c.entry_id.in_([e.id for e in entries] or [0]),
            )
        ).all()
    by_kind = {k: sum(e.points for e in entries if e.kind == k) for k in ("earn", "spend", "expire")}
    assert account.balance == sum(lot.remaining for lot in lots)
    assert account.balance == account.earned - account.spent - account.expired >= 0
    assert (account.earned, account.spent, account.expired) == (
        by_kind["earn"],
        by_kind["spend"],
        by_kind["expire"],
    )
    assert account.earned == sum(lot.points for lot in lots)
    for lot in lots:
        assert lot.points - lot.remaining == sum(a.points for a in allocations if a.lot_id == lot.id)
    for entry in entries:
        if entry.kind != "earn":
            assert entry.points == sum(a.points for a in allocations if a.entry_id == entry.id)
    running = 0
    for entry in entries:
        running += entry.points if entry.kind == "earn" else -entry.points
        assert entry.balance_after == running >= 0 or not chain
    assert running == account.balance
    return {
        "balance": account.balance,
        "earned": account.earned,
        "spent": account.spent,
        "expired": account.expired,
    }
