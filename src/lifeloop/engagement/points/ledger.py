"""The points ledger: earn into lots, spend first-expiring lots first, expire due lots.

Every change takes the customer's ``points_accounts`` row first (``SELECT … FOR UPDATE`` on
PostgreSQL; SQLite's writers take turns), so concurrent earns, spends and expiries of one customer
serialise and each sees the balance the one before left. Each change has a key: the same key again
returns the entry it made and changes nothing. Points due to expire are expired under that same lock
before a change, so a spend never takes points that are already past their date.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Row, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from lifeloop.engagement.events import record_event
from lifeloop.engagement.points.merges import absorb_merged, merged_into
from lifeloop.engagement.points.models import points_accounts, points_allocations, points_entries, points_lots
from lifeloop.engagement.points.settings import get_settings
from lifeloop.errors import Conflict, InvalidInput
from lifeloop.profiles.service import resolve_profile_id
from lifeloop.store.rows import IN_CHUNK
from lifeloop.workspaces.service import get_workspace

EVENT_NAMES = {"earn": "Points Earned", "spend": "Points Spent", "expire": "Points Expired"}
MAX_POINTS = 100_000_000  # one operation; beyond it is a typo, not a reward


@dataclass(frozen=True, slots=True)
class PointsEntry:
    id: int
    profile_id: int
    kind: str  # earn, spend or expire
    points: int  # positive; the kind says which way
    balance_after: int
    key: str
    reason: str
    expires_at: datetime | None
    at: datetime
    ref: str | None = None  # what it is about, e.g. "order:A-1" (a refund reverses what that order earned)

    @classmethod
    def of(cls, row: Row[Any]) -> PointsEntry:
        return cls(
            id=row.id,
            profile_id=row.profile_id,
            kind=row.kind,
            points=row.points,
            balance_after=row.balance_after,
            key=row.key,
            reason=row.reason,
            expires_at=row.expires_at,
            at=row.at,
            ref=row.ref,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "profile_id": self.profile_id,
            "kind": self.kind,
            "points": self.points,
            "change": self.points if self.kind == "earn" else -self.points,
            "balance_after": self.balance_after,
            "key": self.key,
            "reason": self.reason,
            "expires_at": self.expires_at,
            "at": self.at,
            "ref": self.ref,
        }


# Reading ---------------------------------------------------------------------------------------------
def _chunks(ids: Sequence[int]) -> Iterable[list[int]]:
    unique = sorted(set(ids))
    for start in range(0, len(unique), IN_CHUNK):
        yield unique[start : start + IN_CHUNK]


def _unexpired(now: datetime) -> Any:
    return or_(points_lots.c.expires_at.is_(None), points_lots.c.expires_at > now)


def balance(conn: Connection, workspace_id: int, profile_id: int, *, now: datetime) -> int:
    """Points the customer can spend at ``now`` (lots past their date count as expired, swept or not)."""
    return balances(conn, workspace_id, [profile_id], now=now).get(profile_id, 0)


def balances(
    conn: Connection, workspace_id: int, profile_ids: Sequence[int], *, now: datetime
) -> dict[int, int]:
    """Each profile's spendable points at ``now`` (with the profiles merged into it); every id asked for
    is in the answer (0 if none)."""
    out = dict.fromkeys(profile_ids, 0)
    owner = {**{p: p for p in profile_ids}, **merged_into(conn, workspace_id, profile_ids)}
    for chunk in _chunks(list(owner)):
        rows = conn.execute(
            select(points_lots.c.profile_id, func.sum(points_lots.c.remaining))
            .where(
                points_lots.c.workspace_id == workspace_id,
                points_lots.c.profile_id.in_(chunk),
                points_lots.c.remaining > 0,
                _unexpired(now),
            )
            .group_by(points_lots.c.profile_id)
        )
        for pid, total in rows:
            out[owner[int(pid)]] += int(total)
    return out


def earned_between(
    conn: Connection, workspace_id: int, profile_ids: Sequence[int], since: datetime, until: datetime
) -> dict[int, int]:
    """Points each profile (with those merged into it) earned in [since, until), whatever was spent or
    expired since."""
    out = dict.fromkeys(profile_ids, 0)
    owner = {**{p: p for p in profile_ids}, **merged_into(conn, workspace_id, profile_ids)}
    for chunk in _chunks(list(owner)):
        rows = conn.execute(
            select(points_entries.c.profile_id, func.sum(points_entries.c.points))
            .where(
                points_entries.c.workspace_id == workspace_id,
                points_entries.c.profile_id.in_(chunk),
                points_entries.c.kind == "earn",
                points_entries.c.at >= since,
                points_entries.c.at < until,
            )
            .group_by(points_entries.c.profile_id)
        )
        for pid, total in rows:
            out[owner[int(pid)]] += int(total)
    return out


def history(
    conn: Connection, workspace_id: int, profile_id: int, *, limit: int = 50, before: int | None = None
) -> list[PointsEntry]:
    """The profile's entries (with those of profiles merged into it), newest first; ``before`` an entry
    id for the next page."""
    owners = [profile_id, *merged_into(conn, workspace_id, [profile_id])]
    query = select(points_entries).where(
        points_entries.c.workspace_id == workspace_id, points_entries.c.profile_id.in_(owners)
    )
    if before is not None:
        query = query.where(points_entries.c.id < before)
    rows = conn.execute(query.order_by(points_entries.c.id.desc()).limit(limit))
    return [PointsEntry.of(r) for r in rows]


def account_totals(conn: Connection, workspace_id: int, profile_id: int) -> dict[str, int]:
    """The account's stored totals, with those of profiles merged into it: balance, earned, spent,
    expired (zeros for a customer without one)."""
    owners = [profile_id, *merged_into(conn, workspace_id, [profile_id])]
    rows = conn.execute(
        select(points_accounts).where(
            points_accounts.c.workspace_id == workspace_id, points_accounts.c.profile_id.in_(owners)
        )
    ).all()
    names = ("balance", "earned", "spent", "expired")
    return {n: sum(int(getattr(row, n)) for row in rows) for n in names}


def points_for(conn: Connection, workspace_id: int, profile_id: int, ref: str) -> dict[str, int]:
    """Points earned and spent under ``ref`` by the customer (with profiles merged into it), by kind."""
    owners = [profile_id, *merged_into(conn, workspace_id, [profile_id])]
    rows = conn.execute(
        select(points_entries.c.kind, func.sum(points_entries.c.points))
        .where(
            points_entries.c.workspace_id == workspace_id,
            points_entries.c.profile_id.in_(owners),
            points_entries.c.ref == ref,
        )
        .group_by(points_entries.c.kind)
    )
    return {"earn": 0, "spend": 0, **{kind: int(total) for kind, total in rows}}


def entry_by_key(conn: Connection, workspace_id: int, key: str) -> PointsEntry | None:
    row = conn.execute(
        select(points_entries).where(
            points_entries.c.workspace_id == workspace_id, points_entries.c.key == key
        )
    ).first()
    return None if row is None else PointsEntry.of(row)


# Validity ----------------------------------------------------------------------------------------------
def default_expiry(conn: Connection, workspace_id: int, now: datetime) -> datetime | None:
    """When points earned at ``now`` expire under the workspace's validity rule (None: never)."""
    validity = get_settings(conn, workspace_id).rules["validity"]
    if validity["kind"] == "days":
        return now + timedelta(days=int(validity["days"]))
    if validity["kind"] == "year_end":
        zone = ZoneInfo(get_workspace(conn, workspace_id).timezone)
        local = now.astimezone(zone)
        # the first moment of next year on the workspace's calendar
        return datetime(local.year + 1, 1, 1, tzinfo=zone).astimezone(now.tzinfo)
    return None


# Changing ----------------------------------------------------------------------------------------------
def _check(points: Any, key: Any, reason: Any) -> None:
    if isinstance(points, bool) or not isinstance(points, int) or not 0 < points <= MAX_POINTS:
        raise InvalidInput(f"points must be a whole number from 1 to {MAX_POINTS}", field="points")
    if not isinstance(key, str) or not key.strip() or len(key) > 255:
        raise InvalidInput("key must be 1 to 255 characters", field="key")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 200:
        raise InvalidInput("reason must be 1 to 200 characters", field="reason")


def _same_request(
    conn: Connection, workspace_id: int, entry: PointsEntry, profile_id: int, kind: str, points: int
) -> PointsEntry:
    """The entry a key made, if it was made for the same request (for the same customer, though their
    profile may have merged since); otherwise the key is misused."""
    owner = resolve_profile_id(conn, workspace_id, entry.profile_id)
    if (owner, entry.kind, entry.points) != (profile_id, kind, points):
        raise Conflict(
            f"the key {entry.key!r} was already used to {entry.kind} {entry.points} points for profile "
            f"{entry.profile_id}; use a new key for a different request",
            field="key",
        )
    return entry


def lock_account(conn: Connection, workspace_id: int, profile_id: int, now: datetime) -> Row[Any]:
    """Create the customer's account if need be, then hold its row until the transaction ends."""
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    conn.execute(
        dialect_insert(points_accounts)
        .values(
            workspace_id=workspace_id,
            profile_id=profile_id,
            balance=0,
            earned=0,
            spent=0,
            expired=0,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["workspace_id", "profile_id"])
    )
    locked = select(points_accounts).where(
        points_accounts.c.workspace_id == workspace_id, points_accounts.c.profile_id == profile_id
    )
    account = conn.execute(locked.with_for_update()).one()
    if absorb_merged(conn, workspace_id, profile_id):  # profiles merged into this one bring their points
        account = conn.execute(locked).one()
    return account


def _add_entry(
    conn: Connection,
    workspace_id: int,
    profile_id: int,
    kind: str,
    points: int,
    balance_after: int,
    *,
    key: str,
    reason: str,
    now: datetime,
    expires_at: datetime | None = None,
    ref: str | None = None,
) -> PointsEntry:
    entry = PointsEntry(0, profile_id, kind, points, balance_after, key, reason, expires_at, now, ref)
    values = {k: getattr(entry, k) for k in PointsEntry.__slots__ if k != "id"}
    entry_id = conn.execute(
        insert(points_entries).values(workspace_id=workspace_id, **values).returning(points_entries.c.id)
    ).scalar_one()
    return replace(entry, id=entry_id)


def _move_account(conn: Connection, workspace_id: int, profile_id: int, now: datetime, **deltas: int) -> None:
    c = points_accounts.c
    change = deltas.get("earned", 0) - deltas.get("spent", 0) - deltas.get("expired", 0)
    conn.execute(
        update(points_accounts)
        .where(c.workspace_id == workspace_id, c.profile_id == profile_id)
        .values(
            balance=c.balance + change,
            earned=c.earned + deltas.get("earned", 0),
            spent=c.spent + deltas.get("spent", 0),
            expired=c.expired + deltas.get("expired", 0),
            updated_at=now,
        )
    )


def _allocate(conn: Connection, workspace_id: int, entry_id: int, takes: list[tuple[int, int]]) -> None:
    """Take ``(lot id, points)`` from lots for an entry (a spend or an expiry)."""
    for lot_id, points in takes:
        conn.execute(
            update(points_lots)
            .where(points_lots.c.workspace_id == workspace_id, points_lots.c.id == lot_id)
            .values(remaining=points_lots.c.remaining - points)
        )
    conn.execute(
        insert(points_allocations),
        [
            {"workspace_id": workspace_id, "entry_id": entry_id, "lot_id": lot, "points": n}
            for lot, n in takes
        ],
    )


def _record(conn: Connection, workspace_id: int, entry: PointsEntry) -> None:
    properties: dict[str, Any] = {
        "points": entry.points,
        "balance": entry.balance_after,
        "reason": entry.reason,
    }
    if entry.kind == "earn":
        properties["expires_at"] = entry.expires_at.isoformat() if entry.expires_at else None
    record_event(
        conn,
        workspace_id,
        entry.profile_id,
        EVENT_NAMES[entry.kind],
        properties,
        at=entry.at,
        key=f"points:{entry.id}",
    )


def _expire_locked(
    conn: Connection, workspace_id: int, profile_id: int, balance_now: int, now: datetime
) -> list[PointsEntry]:
    """Expire the account's due lots (the account is locked); returns their entries, oldest first."""
    due = conn.execute(
        select(points_lots.c.id, points_lots.c.remaining)
        .where(
            points_lots.c.workspace_id == workspace_id,
            points_lots.c.profile_id == profile_id,
            points_lots.c.remaining > 0,
            points_lots.c.expires_at <= now,
        )
        .order_by(points_lots.c.expires_at, points_lots.c.id)
    ).all()
    entries: list[PointsEntry] = []
    for lot_id, remaining in due:
        balance_now -= remaining
        entry = _add_entry(
            conn,
            workspace_id,
            profile_id,
            "expire",
            remaining,
            balance_now,
            key=f"expire:lot:{lot_id}",
            reason="points reached their expiry date",
            now=now,
        )
        _allocate(conn, workspace_id, entry.id, [(lot_id, remaining)])
        _move_account(conn, workspace_id, profile_id, now, expired=remaining)
        _record(conn, workspace_id, entry)
        entries.append(entry)
    return entries


def _balance_after_expiry(conn: Connection, workspace_id: int, account: Row[Any], now: datetime) -> int:
    expired = _expire_locked(conn, workspace_id, account.profile_id, account.balance, now)
    return expired[-1].balance_after if expired else int(account.balance)


def expire_due(conn: Connection, workspace_id: int, profile_id: int, *, now: datetime) -> int:
    """Expire the customer's lots that are due at ``now``; returns how many lots expired."""
    profile_id = resolve_profile_id(conn, workspace_id, profile_id)  # a merged profile's lots: its survivor's
    account = lock_account(conn, workspace_id, profile_id, now)
    left = _expire_locked(conn, workspace_id, profile_id, account.balance, now)
    return len(left)


def award_points(
    conn: Connection,
    workspace_id: int,
    profile_id: int,
    points: int,
    *,
    key: str,
    reason: str,
    now: datetime,
    expires_at: datetime | None = None,
    ref: str | None = None,
) -> PointsEntry:
    """Earn ``points`` for a customer in a new lot, once per ``key`` (the same key returns the same entry).

    ``expires_at`` None means the workspace's validity rule decides (which may be never); ``ref`` says
    what the points are for (``order:{order_id}``), for a later reversal."""
    _check(points, key, reason)
    profile_id = resolve_profile_id(conn, workspace_id, profile_id)
    if (done := entry_by_key(conn, workspace_id, key)) is not None:  # a retry: the first answer
        return _same_request(conn, workspace_id, done, profile_id, "earn", points)
    if expires_at is not None and expires_at.tzinfo is None:
        raise InvalidInput("expires_at needs a time zone, e.g. 2027-01-01T00:00:00+08:00", field="expires_at")
    if expires_at is not None and expires_at <= now:
        raise InvalidInput("expires_at must be later than now", field="expires_at")
    account = lock_account(conn, workspace_id, profile_id, now)
    if (done := entry_by_key(conn, workspace_id, key)) is not None:  # a concurrent twin got there first
        return _same_request(conn, workspace_id, done, profile_id, "earn", points)
    balance_now = _balance_after_expiry(conn, workspace_id, account, now)
    expiry = expires_at if expires_at is not None else default_expiry(conn, workspace_id, now)
    entry = _add_entry(
        conn,
        workspace_id,
        profile_id,
        "earn",
        points,
        balance_now + points,
        key=key,
        reason=reason,
        now=now,
        expires_at=expiry,
        ref=ref,
    )
    conn.execute(
        insert(points_lots).values(
            workspace_id=workspace_id,
            profile_id=profile_id,
            entry_id=entry.id,
            points=points,
            remaining=points,
            earned_at=now,
            expires_at=expiry,
        )
    )
    _move_account(conn, workspace_id, profile_id, now, earned=points)
    _record(conn, workspace_id, entry)
    return entry


def spend_points(
    conn: Connection,
    workspace_id: int,
    profile_id: int,
    points: int,
    *,
    key: str,
    reason: str,
    now: datetime,
    ref: str | None = None,
) -> PointsEntry:
    """Spend ``points`` from the lots that expire first (then the oldest), once per ``key``.

    Refused (``Conflict``, nothing changes) when the customer has fewer points than that."""
    _check(points, key, reason)
    profile_id = resolve_profile_id(conn, workspace_id, profile_id)
    if (done := entry_by_key(conn, workspace_id, key)) is not None:
        return _same_request(conn, workspace_id, done, profile_id, "spend", points)
    account = lock_account(conn, workspace_id, profile_id, now)
    if (done := entry_by_key(conn, workspace_id, key)) is not None:
        return _same_request(conn, workspace_id, done, profile_id, "spend", points)
    balance_now = _balance_after_expiry(conn, workspace_id, account, now)
    if balance_now < points:
        raise Conflict(
            f"the balance is {balance_now} points, {points - balance_now} short of the {points} to spend",
            field="points",
        )
    lots = conn.execute(
        select(points_lots.c.id, points_lots.c.remaining)
        .where(
            points_lots.c.workspace_id == workspace_id,
            points_lots.c.profile_id == profile_id,
            points_lots.c.remaining > 0,
        )
        .order_by(
            points_lots.c.expires_at.is_(None),  # lots that expire come first, soonest first
            points_lots.c.expires_at,
            points_lots.c.earned_at,
            points_lots.c.id,
        )
    ).all()
    takes: list[tuple[int, int]] = []
    wanted = points
    for lot_id, remaining in lots:
        if wanted == 0:
            break
        take = min(wanted, remaining)
        takes.append((lot_id, take))
        wanted -= take
    entry = _add_entry(
        conn,
        workspace_id,
        profile_id,
        "spend",
        points,
        balance_now - points,
        key=key,
        reason=reason,
        now=now,
        ref=ref,
    )
    _allocate(conn, workspace_id, entry.id, takes)
    _move_account(conn, workspace_id, profile_id, now, spent=points)
    _record(conn, workspace_id, entry)
    return entry
