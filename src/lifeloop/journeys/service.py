"""Journeys' function API: drafts, publishing versions, pausing, archiving, manual entry."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select, update

from lifeloop.errors import Conflict, InvalidInput, NotFound
from lifeloop.journeys import definition as d
from lifeloop.journeys.engine import Turn, advance_runs, definition_of, enter
from lifeloop.journeys.models import journey_runs, journey_versions, journeys
from lifeloop.store.schema import utcnow

# Which status may follow which (draft → active → paused ↔ active → archived).
_MOVES = {
    "draft": {"active", "archived"},
    "active": {"paused", "archived"},
    "paused": {"active", "archived"},
    "archived": set(),
}


@dataclass(frozen=True, slots=True)
class Journey:
    id: int
    key: str
    name: dict[str, str]
    status: str
    version: int | None
    draft: dict[str, Any]
    playbook: str | None
    created_at: datetime
    updated_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "key": self.key,
            "name": self.name,
            "status": self.status,
            "version": self.version,
            "draft": self.draft,
            "playbook": self.playbook,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def _record(row: Any) -> Journey:
    return Journey(
        row.id,
        row.key,
        row.name,
        row.status,
        row.version,
        row.draft,
        row.playbook,
        row.created_at,
        row.updated_at,
    )


def definition_dict(defn: d.Definition) -> dict[str, Any]:
    """A definition as stored and shown: JSON, aliases, absent fields left out."""
    data = defn.model_dump(mode="json", by_alias=True, exclude_none=True)
    for step, dumped in zip(defn.steps, data["steps"], strict=True):
        if isinstance(step, d.SetTraitStep) and step.value is None:
            dumped["value"] = None  # a set_trait's null is its value (remove the trait), not an absent field
    return data


def get_journey(conn: Connection, workspace_id: int, key: str) -> Journey:
    row = conn.execute(
        select(journeys).where(journeys.c.workspace_id == workspace_id, journeys.c.key == key)
    ).first()
    if row is None:
        raise NotFound(f"no journey {key!r}")
    return _record(row)


def list_journeys(conn: Connection, workspace_id: int, *, status: str | None = None) -> list[Journey]:
    query = select(journeys).where(journeys.c.workspace_id == workspace_id).order_by(journeys.c.key)
    if status is not None:
        query = query.where(journeys.c.status == status)
    return [_record(r) for r in conn.execute(query)]


def save_draft(
    conn: Connection,
    workspace_id: int,
    source: str | dict[str, Any],
    *,
    playbook: str | None = None,
    now: datetime | None = None,
) -> Journey:
    """Create a journey as a draft, or replace the draft of an existing one (its versions are kept)."""
    now = now or utcnow()
    defn = d.load_definition(source)
    draft = definition_dict(defn)
    existing = conn.execute(
        select(journeys.c.id, journeys.c.status).where(
            journeys.c.workspace_id == workspace_id, journeys.c.key == defn.key
        )
    ).first()
    if existing is None:
        conn.execute(
            journeys.insert().values(
                workspace_id=workspace_id,
                key=defn.key,
                name=defn.name,
                status="draft",
                draft=draft,
                playbook=playbook,
                created_at=now,
                updated_at=now,
            )
        )
    else:
        if existing.status == "archived":
            raise Conflict(f"journey {defn.key!r} is archived; give the new one another key")
        conn.execute(
            update(journeys)
            .where(journeys.c.workspace_id == workspace_id, journeys.c.id == existing.id)
            .values(name=defn.name, draft=draft, updated_at=now)
        )
    return get_journey(conn, workspace_id, defn.key)


def check_references(conn: Connection, workspace_id: int, defn: d.Definition) -> None:
    """What a definition names must exist in the workspace: templates (on their channel), segments."""
    from lifeloop.audience.definitions import get_segment
    from lifeloop.messaging.templates.service import get_template

    for index, step in enumerate(defn.steps):
        for step_key, channel, key in defn.templates():
            if step_key != step.key:
                continue
            try:
                template = get_template(conn, workspace_id, key)
            except NotFound:
                raise InvalidInput(
                    f"steps[{index}] ({step.key}).template: no template {key!r} in this workspace",
                    field=f"steps[{index}].template",
                ) from None
            if template.channel != channel:
                raise InvalidInput(
                    f"steps[{index}] ({step.key}).template: {key!r} is a {template.channel} template, "
                    f"not {channel}",
                    field=f"steps[{index}].template",
                )
    _check_coupon_templates(conn, workspace_id, defn)
    segment = getattr(defn.trigger, "segment", None)
    if segment:
        try:
            get_segment(conn, workspace_id, segment)
        except NotFound:
            raise InvalidInput(f"trigger.segment: no segment {segment!r}", field="trigger.segment") from None


def _check_coupon_templates(conn: Connection, workspace_id: int, defn: d.Definition) -> None:
    from lifeloop.engagement.coupons.templates import get_template as get_coupon_template

    for index, step in enumerate(defn.steps):
        if isinstance(step, d.IssueCouponStep):
            try:
                get_coupon_template(conn, workspace_id, step.template)
            except NotFound:
                raise InvalidInput(
                    f"steps[{index}] ({step.key}).template: no coupon template {step.template!r}",
                    field=f"steps[{index}].template",
                ) from None


def publish(
    conn: Connection, workspace_id: int, key: str, *, by: str | None = None, now: datetime | None = None
) -> Journey:
    """Make the draft a new version and activate it; runs inside finish the version they entered."""
    now = now or utcnow()
    journey = get_journey(conn, workspace_id, key)
    if journey.status == "archived":
        raise Conflict(f"journey {key!r} is archived")
    defn = d.load_definition(journey.draft)
    check_references(conn, workspace_id, defn)
    version = (journey.version or 0) + 1
    conn.execute(
        journey_versions.insert().values(
            workspace_id=workspace_id,
            journey_id=journey.id,
            version=version,
            definition=definition_dict(defn),
            published_at=now,
            published_by=by,
        )
    )
    trigger_name, _ = defn.trigger_event()
    kind = "event" if trigger_name else defn.trigger.kind
    from lifeloop.journeys.scheduler import first_look

    conn.execute(
        update(journeys)
        .where(journeys.c.workspace_id == workspace_id, journeys.c.id == journey.id)
        .values(
            version=version,
            status="active",
            trigger_kind=kind,
            trigger_name=trigger_name,
            goal_event=defn.goal.event if defn.goal else None,
            next_schedule_at=first_look(conn, workspace_id, defn, now),
            updated_at=now,
        )
    )
    return get_journey(conn, workspace_id, key)


def set_status(
    conn: Connection, workspace_id: int, key: str, status: str, *, now: datetime | None = None
) -> Journey:
    """Pause, resume or archive. Archiving lets every run inside leave (reason ``archived``)."""
    now = now or utcnow()
    journey = get_journey(conn, workspace_id, key)
    if status not in _MOVES:
        raise InvalidInput(f"status must be one of {', '.join(_MOVES)}", field="status")
    if status == journey.status:
        return journey
    if status not in _MOVES[journey.status]:
        raise Conflict(f"a {journey.status} journey cannot become {status}")
    if status == "active" and journey.version is None:
        raise Conflict(f"journey {key!r} has no published version: publish it")
    conn.execute(
        update(journeys)
        .where(journeys.c.workspace_id == workspace_id, journeys.c.id == journey.id)
        .values(status=status, updated_at=now)
    )
    if status == "archived":
        conn.execute(
            update(journey_runs)
            .where(
                journey_runs.c.workspace_id == workspace_id,
                journey_runs.c.journey_id == journey.id,
                journey_runs.c.status == "waiting",
            )
            .values(status="exited", exit_reason="archived", exited_at=now, due_at=None, updated_at=now)
        )
    return get_journey(conn, workspace_id, key)


def enter_profiles(
    conn: Connection,
    workspace_id: int,
    key: str,
    *,
    profile_ids: list[int] | None = None,
    segment: str | None = None,
    idempotency_key: str,
    properties: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> list[int]:
    """Manual / API entry of profiles or a segment's members into an active journey; the new runs' ids.

    The same ``idempotency_key`` again enters nobody twice. Runs start in the worker, as due now.
    """
    from lifeloop.profiles.service import resolve_profile_id

    now = now or utcnow()
    journey = get_journey(conn, workspace_id, key)
    if journey.status != "active" or journey.version is None:
        raise Conflict(f"journey {key!r} is {journey.status}; only an active journey takes entries")
    if (profile_ids is None) == (segment is None):
        raise InvalidInput("give profile_ids or a segment", field="profile_ids")
    if segment is not None:
        from lifeloop.audience.query import member_ids

        pids = member_ids(conn, workspace_id, segment)
    else:
        pids = sorted({resolve_profile_id(conn, workspace_id, pid) for pid in profile_ids or []})
    trigger = {"event": "$manual", "message_id": idempotency_key, "properties": properties or {}}
    entries = [(pid, f"manual:{idempotency_key}", trigger) for pid in pids]
    turn = Turn(workspace_id, now)
    ids = enter(conn, workspace_id, journey.id, journey.version, entries, now=now, turn=turn)
    turn.flush(conn)
    return ids


def advance_now(conn: Connection, workspace_id: int, run_ids: list[int], *, now: datetime) -> int:
    """Advance runs in this transaction (used right after a small manual entry)."""
    turn = Turn(workspace_id, now)
    return advance_runs(conn, workspace_id, run_ids, turn=turn)


def versions(conn: Connection, workspace_id: int, key: str) -> list[dict[str, Any]]:
    journey = get_journey(conn, workspace_id, key)
    rows = conn.execute(
        select(journey_versions.c.version, journey_versions.c.published_at, journey_versions.c.published_by)
        .where(journey_versions.c.workspace_id == workspace_id, journey_versions.c.journey_id == journey.id)
        .order_by(journey_versions.c.version)
    )
    counts: dict[int, int] = dict(
        conn.execute(
            select(journey_runs.c.version, func.count())
            .where(
                journey_runs.c.workspace_id == workspace_id,
                journey_runs.c.journey_id == journey.id,
                journey_runs.c.status == "waiting",
            )
            .group_by(journey_runs.c.version)
        ).all()
    )
    return [
        {
            "version": r.version,
            "published_at": r.published_at.isoformat(),
            "published_by": r.published_by,
            "inside": counts.get(r.version, 0),
        }
        for r in rows
    ]


def version_definition(conn: Connection, workspace_id: int, key: str, version: int) -> dict[str, Any]:
    journey = get_journey(conn, workspace_id, key)
    try:
        return definition_dict(definition_of(conn, workspace_id, journey.id, version))
    except Exception:
        raise NotFound(f"journey {key!r} has no version {version}") from None


def profile_runs(conn: Connection, workspace_id: int, profile_id: int) -> list[dict[str, Any]]:
    """A customer's journeys: every run, newest first."""
    rows = conn.execute(
        select(journey_runs, journeys.c.key)
        .join(journeys, journeys.c.id == journey_runs.c.journey_id)
        .where(
            journey_runs.c.workspace_id == workspace_id,
            journeys.c.workspace_id == workspace_id,
            journey_runs.c.profile_id == profile_id,
        )
        .order_by(journey_runs.c.id.desc())
        .limit(200)
    )
    return [
        {
            "run_id": r.id,
            "journey": r.key,
            "version": r.version,
            "status": r.status,
            "step": r.step,
            "due_at": r.due_at.isoformat() if r.due_at else None,
            "waiting_for": r.wait_event,
            "arm": r.arm,
            "entered_at": r.entered_at.isoformat(),
            "exited_at": r.exited_at.isoformat() if r.exited_at else None,
            "exit_reason": r.exit_reason,
            "converted_at": r.converted_at.isoformat() if r.converted_at else None,
        }
        for r in rows
    ]
