"""Statistics of a journey, per version: entries, where runs are, exits, conversions, messages, A/B."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, distinct, func, select

from lifeloop.experiments import versus_control
from lifeloop.journeys.models import journey_runs, journey_steps
from lifeloop.journeys.service import get_journey


def journey_stats(
    conn: Connection, workspace_id: int, key: str, *, version: int | None = None
) -> dict[str, Any]:
    """Everything the journey's statistics page shows; ``version`` narrows it to one version."""
    from lifeloop.messaging.service import outcome_counts

    journey = get_journey(conn, workspace_id, key)
    r, s = journey_runs.c, journey_steps.c
    scope = [r.workspace_id == workspace_id, r.journey_id == journey.id]
    step_scope = [s.workspace_id == workspace_id, s.journey_id == journey.id]
    if version is not None:
        scope.append(r.version == version)
        step_scope.append(s.version == version)

    def counted(*columns: Any, where: tuple[Any, ...] = ()) -> list[Any]:
        query = select(*columns, func.count()).where(*scope, *where).group_by(*columns).order_by(*columns)
        return list(conn.execute(query))

    totals = conn.execute(
        select(
            func.count(),
            func.count(distinct(r.profile_id)),
            func.count(r.converted_at),
            func.coalesce(func.sum(r.conversion_value), 0.0),
        ).where(*scope)
    ).one()
    reached = conn.execute(
        select(s.step, s.outcome, func.count(distinct(s.run_id)))
        .where(*step_scope)
        .group_by(s.step, s.outcome)
        .order_by(s.step, s.outcome)
    )
    steps: dict[str, dict[str, Any]] = {}
    for step, outcome, n in reached:
        entry = steps.setdefault(step, {"completed": 0, "outcomes": {}, "waiting": 0})
        entry["completed"] += int(n)
        entry["outcomes"][outcome] = int(n)
    for step, n in counted(r.step, where=(r.status == "waiting",)):
        steps.setdefault(step or "", {"completed": 0, "outcomes": {}, "waiting": 0})["waiting"] = int(n)
    exits = {
        f"{status}:{reason}": int(n)
        for status, reason, n in counted(r.status, r.exit_reason, where=(r.status != "waiting",))
    }
    message_ids = select(s.outbox_id).where(*step_scope, s.outbox_id.is_not(None))
    return {
        "journey": journey.key,
        "version": version,
        "entered": int(totals[0]),
        "users": int(totals[1]),
        "waiting": sum(v["waiting"] for v in steps.values()),
        "converted": int(totals[2]),
        "revenue": float(totals[3]),
        "steps": steps,
        "exited": exits,
        "by_version": {int(v): int(n) for v, n in counted(r.version)},
        "messages": outcome_counts(conn, workspace_id, message_ids),
        "experiment": _experiment(conn, scope),
    }


def _experiment(conn: Connection, scope: list[Any]) -> dict[str, Any] | None:
    """Each A/B arm against the holdout: conversion, revenue per user, the test and its verdict."""
    r = journey_runs.c
    rows = list(
        conn.execute(
            select(
                r.arm,
                func.count(),
                func.count(r.converted_at),
                func.coalesce(func.sum(r.conversion_value), 0.0),
            )
            .where(*scope, r.arm.is_not(None))
            .group_by(r.arm)
            .order_by(r.arm)
        )
    )
    if not rows:
        return None
    return versus_control({arm: (int(n), int(c), float(v)) for arm, n, c, v in rows})


def entry_counts(conn: Connection, workspace_id: int) -> dict[str, dict[str, int]]:
    """Per journey key: runs entered (every version) and runs inside now, in one query, for the list of
    journeys (``journey_stats`` is per journey and reads much more)."""
    from lifeloop.journeys.models import journeys

    r, j = journey_runs.c, journeys.c
    rows = conn.execute(
        select(j.key, func.count(r.id), func.count(r.id).filter(r.status == "waiting"))
        .select_from(journeys.join(journey_runs, r.journey_id == j.id))
        .where(j.workspace_id == workspace_id, r.workspace_id == workspace_id)
        .group_by(j.key)
    )
    return {key: {"entered": int(entered), "inside": int(inside)} for key, entered, inside in rows}
