"""New-user tasks (新人任务): complete the profile, browse, add to cart, follow the official account —
each rewarded once in points, when done within the window after the customer was first seen.

A task is done by an event (``settings.TASK_EVENTS``); completing the profile is an identify after
which the profile has every configured trait. The completion row and the reward's key (one per task
and customer) make a task pay once, however often its event comes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, select

from lifeloop.engagement.points import ledger
from lifeloop.engagement.points.merges import merged_into
from lifeloop.engagement.points.models import points_task_completions
from lifeloop.engagement.points.settings import TASK_EVENTS, PointsSettings, get_settings
from lifeloop.errors import NotFound
from lifeloop.profiles.models import profiles
from lifeloop.profiles.service import resolve_profile_id

TASK_TITLES = {
    "complete_profile": "Complete your profile",
    "browse": "Browse a product",
    "add_to_cart": "Add a product to the cart",
    "follow": "Follow the official account",
}


def _profile(conn: Connection, workspace_id: int, profile_id: int) -> Any:
    row = conn.execute(
        select(profiles.c.id, profiles.c.first_seen, profiles.c.traits).where(
            profiles.c.workspace_id == workspace_id, profiles.c.id == profile_id
        )
    ).first()
    if row is None:
        raise NotFound(f"no profile {profile_id} in this workspace")
    return row


def _completed(conn: Connection, workspace_id: int, profile_id: int) -> dict[str, Any]:
    """The tasks done by the profile or by a profile merged into it (its own row first, on a clash)."""
    owners = [profile_id, *merged_into(conn, workspace_id, [profile_id])]
    rows = conn.execute(
        select(points_task_completions).where(
            points_task_completions.c.workspace_id == workspace_id,
            points_task_completions.c.profile_id.in_(owners),
        )
    ).all()
    done: dict[str, Any] = {}
    for row in sorted(rows, key=lambda r: r.profile_id != profile_id):
        done.setdefault(row.task, row)
    return done


def profile_complete(traits: dict[str, Any] | None, wanted: list[str]) -> bool:
    traits = traits or {}
    return all(traits.get(name) not in (None, "", [], {}) for name in wanted)


def tasks_done_by(name: str) -> list[str]:
    return [task for task, event in TASK_EVENTS.items() if event == name]


def complete_task(
    conn: Connection,
    workspace_id: int,
    profile_id: int,
    task: str,
    *,
    message_id: str,
    at: datetime,
    now: datetime,
    settings: PointsSettings | None = None,
) -> bool:
    """Record ``task`` as done by the event ``message_id`` (at ``at``) and pay its reward, if it is
    rewarded, within the window, and not done before; whether it was done now."""
    settings = settings or get_settings(conn, workspace_id)
    points = int(settings.tasks["rewards"].get(task, 0))
    if not points:
        return False
    profile = _profile(conn, workspace_id, profile_id)
    if at > profile.first_seen + timedelta(days=int(settings.tasks["window_days"])):
        return False
    if task == "complete_profile" and not profile_complete(profile.traits, settings.tasks["profile_traits"]):
        return False
    ledger.lock_account(conn, workspace_id, profile_id, now)  # one completion per task, even when raced
    if task in _completed(conn, workspace_id, profile_id):
        return False
    conn.execute(
        insert(points_task_completions).values(
            workspace_id=workspace_id,
            profile_id=profile_id,
            task=task,
            points=points,
            message_id=message_id[:255],
            completed_at=now,
        )
    )
    ledger.award_points(
        conn,
        workspace_id,
        profile_id,
        points,
        key=f"task:{task}:{profile_id}",
        reason=f"new-user task: {TASK_TITLES[task].lower()}",
        now=now,
    )
    return True


def task_progress(conn: Connection, workspace_id: int, profile_id: int, *, now: datetime) -> dict[str, Any]:
    """A customer's new-user tasks: each with its reward and whether (and when) it was done, and until
    when the rest can be done."""
    settings = get_settings(conn, workspace_id)
    profile_id = resolve_profile_id(conn, workspace_id, profile_id)
    profile = _profile(conn, workspace_id, profile_id)
    deadline = profile.first_seen + timedelta(days=int(settings.tasks["window_days"]))
    done = _completed(conn, workspace_id, profile_id)
    items = []
    for task in TASK_EVENTS:
        reward = int(settings.tasks["rewards"].get(task, 0))
        row = done.get(task)
        if not reward and row is None:
            continue
        items.append(
            {
                "task": task,
                "title": TASK_TITLES[task],
                "event": TASK_EVENTS[task],
                "points": row.points if row is not None else reward,
                "done": row is not None,
                "completed_at": row.completed_at if row is not None else None,
            }
        )
    return {
        "profile_id": profile_id,
        "first_seen": profile.first_seen,
        "deadline": deadline,
        "open": now < deadline,
        "tasks": items,
    }
