"""How this part of the programme reacts to placed events and what it does over time (see
``engagement.reactions`` and ``engagement.sweeps``).

An ``Order Completed`` earns its tier's (and the member day's) bonus points at the tier held when it
lands, then upgrades the customer at once if the window now reaches a higher tier. ``Points Earned``
can upgrade too when a tier counts points. Downgrades happen only in the sweep, at each member's review.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import IntegrityError

from lifeloop.engagement.reactions import PlacedEvent
from lifeloop.engagement.tiers import member_day, service
from lifeloop.engagement.tiers.config import TierProgram, parse_program
from lifeloop.engagement.tiers.models import tier_members, tier_programs
from lifeloop.errors import InvalidInput
from lifeloop.store.engine import connect, transaction

log = logging.getLogger(__name__)

POINTS_EARNED = "Points Earned"
_REVIEW_BATCH = 500


def react(conn: Connection, workspace_id: int, events: Sequence[PlacedEvent], now: datetime) -> None:
    """React to events just placed on their profiles, in their transaction."""
    relevant = [e for e in events if e.name in (service.ORDER_COMPLETED, POINTS_EARNED)]
    if not relevant:
        return
    program = service.get_program(conn, workspace_id)
    if program is None:
        return
    for event in relevant:
        if event.name == service.ORDER_COMPLETED:
            service.order_bonus(
                conn,
                workspace_id,
                event.profile_id,
                event.properties,
                message_id=event.message_id,
                at=event.timestamp,
                now=now,
            )
            reason = "order"
        elif program.uses_points:
            reason = "points"
        else:
            continue
        service.reconsider(
            conn, workspace_id, event.profile_id, now=now, key=f"{reason}:{event.message_id}", reason=reason
        )


def _due_reviews(engine: Engine, now: datetime, skip: set[int]) -> dict[int, list[int]]:
    with connect(engine) as conn:
        query = (
            select(tier_members.c.workspace_id, tier_members.c.profile_id)
            .where(tier_members.c.review_at <= now)
            .order_by(tier_members.c.review_at)
            .limit(_REVIEW_BATCH)
            .execution_options(cross_workspace=True)  # the sweep serves every workspace
        )
        if skip:
            query = query.where(tier_members.c.workspace_id.not_in(skip))
        due: dict[int, list[int]] = {}
        for row in conn.execute(query):
            due.setdefault(row.workspace_id, []).append(row.profile_id)
    return due


def _review_all(engine: Engine, now: datetime) -> int:
    changed = 0
    skip: set[int] = set()  # workspaces whose programme is gone: their members wait
    while due := _due_reviews(engine, now, skip):
        for ws, pids in due.items():

            def work(conn: Connection, ws: int = ws, pids: list[int] = pids) -> int:
                if service.get_program(conn, ws) is None:
                    skip.add(ws)
                    return 0
                return sum(service.review(conn, ws, pid, now=now) is not None for pid in pids)

            changed += transaction(engine, work, background=True)
    return changed


def _member_days(engine: Engine, now: datetime) -> int:
    with connect(engine) as conn:
        programs = conn.execute(
            select(tier_programs.c.workspace_id, tier_programs.c.config).execution_options(
                cross_workspace=True
            )
        ).all()
    issued = 0
    for ws, config in programs:
        try:
            program = parse_program(config)
        except InvalidInput:
            continue
        if program.member_day is None:
            continue

        def work(conn: Connection, ws: int = ws, program: TierProgram = program) -> int:
            return member_day.run_member_day(conn, program, ws, now)

        try:
            issued += transaction(engine, work, background=True)
        except IntegrityError:  # another worker ran this month's member day at the same moment
            log.info("member day of workspace %s already run", ws)
    return issued


def sweep(engine: Engine, now: datetime) -> int:
    """Due reviews (downgrades) and member days; how many tier changes and coupons."""
    return _review_all(engine, now) + _member_days(engine, now)
