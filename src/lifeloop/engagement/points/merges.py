"""Profiles merge (an anonymous visitor logs in): the points, check-ins and tasks of a merged profile
belong to the profile it was merged into.

Reads count a survivor's merged profiles with it at once; the rows themselves move to the survivor the
next time its account is locked (``ledger.lock_account``), under the survivor's lock and then the
merged accounts' locks, so nothing is moved while a change of either is under way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Column, Connection, Table, delete, select, update

from lifeloop.engagement.points.models import (
    checkins,
    points_accounts,
    points_entries,
    points_lots,
    points_task_completions,
)
from lifeloop.profiles.models import profiles
from lifeloop.store.rows import IN_CHUNK


def merged_into(conn: Connection, workspace_id: int, profile_ids: Sequence[int]) -> dict[int, int]:
    """Every profile merged into one of ``profile_ids``, with the one it was merged into."""
    unique = sorted(set(profile_ids))
    out: dict[int, int] = {}
    for start in range(0, len(unique), IN_CHUNK):
        rows = conn.execute(
            select(profiles.c.id, profiles.c.merged_into).where(
                profiles.c.workspace_id == workspace_id,
                profiles.c.merged_into.in_(unique[start : start + IN_CHUNK]),
            )
        )
        out.update({int(loser): int(winner) for loser, winner in rows})
    return out


def absorb_merged(conn: Connection, workspace_id: int, winner: int) -> bool:
    """Move the ledger, check-ins and task completions of profiles merged into ``winner`` onto it (its
    account is locked). Where both did the same day's check-in or the same task, the survivor's row
    stays; the points either earned stay in the ledger. Whether anything was merged into it."""
    losers = sorted(merged_into(conn, workspace_id, [winner]))
    accounts = points_accounts.c
    for loser in losers:
        account = conn.execute(
            select(points_accounts)
            .where(accounts.workspace_id == workspace_id, accounts.profile_id == loser)
            .with_for_update()
        ).first()
        if account is not None:
            for table in (points_entries, points_lots):
                conn.execute(
                    update(table)
                    .where(table.c.workspace_id == workspace_id, table.c.profile_id == loser)
                    .values(profile_id=winner)
                )
            conn.execute(
                update(points_accounts)
                .where(accounts.workspace_id == workspace_id, accounts.profile_id == winner)
                .values(
                    balance=accounts.balance + account.balance,
                    earned=accounts.earned + account.earned,
                    spent=accounts.spent + account.spent,
                    expired=accounts.expired + account.expired,
                )
            )
            conn.execute(
                delete(points_accounts).where(
                    accounts.workspace_id == workspace_id, accounts.profile_id == loser
                )
            )
        _move_rows(conn, workspace_id, checkins, checkins.c.day, loser, winner)
        _move_rows(conn, workspace_id, points_task_completions, points_task_completions.c.task, loser, winner)
    return bool(losers)


def _move_rows(
    conn: Connection, workspace_id: int, table: Table, part: Column[Any], loser: int, winner: int
) -> None:
    """Move a loser's rows keyed by (profile, ``part``) to the winner, keeping the winner's on a clash."""
    c = table.c
    mine = select(part).where(c.workspace_id == workspace_id, c.profile_id == winner)
    taken = {r[0] for r in conn.execute(mine)}
    theirs = select(part).where(c.workspace_id == workspace_id, c.profile_id == loser)
    for (value,) in conn.execute(theirs).all():
        row = (c.workspace_id == workspace_id, c.profile_id == loser, part == value)
        if value in taken:
            conn.execute(delete(table).where(*row))
        else:
            conn.execute(update(table).where(*row).values(profile_id=winner))
