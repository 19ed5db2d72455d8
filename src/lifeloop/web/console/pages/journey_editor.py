"""The journey flow editor: the draft drawn as its flow, with how many runs are at each step; click a
step to change or delete it, click the ＋ on a way between steps to put a new step there.

Each change is one ``journeys.editing`` operation on the stored draft, saved by ``service.save_draft``
(which validates the whole definition); the published versions are untouched until the draft is
published on the journey's page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Connection

from lifeloop.accounts.models import ConsoleSession
from lifeloop.accounts.service import record_action
from lifeloop.engagement.coupons.templates import list_templates as list_coupon_templates
from lifeloop.errors import InvalidInput, LifeloopError, NotFound
from lifeloop.journeys import definition as d
from lifeloop.journeys import editing, service
from lifeloop.journeys.stats import journey_stats
from lifeloop.messaging.channels.models import CHANNELS
from lifeloop.messaging.templates.service import list_templates
from lifeloop.web.console.auth import Editor
from lifeloop.web.console.i18n import N_
from lifeloop.web.console.pages.data import fresh
from lifeloop.web.console.pages.journeys import flow
from lifeloop.web.console.pages.lifecycle import localized
from lifeloop.web.console.render import page
from lifeloop.web.deps import Conn, EngineDep
from lifeloop.workspaces.service import get_workspace

router = APIRouter(include_in_schema=False)

STEP_TYPES = {
    "wait": N_("Wait"),
    "wait_for": N_("Wait for an event"),
    "branch": N_("Branch on a condition"),
    "split": N_("A/B split"),
    "send": N_("Send a message"),
    "add_tag": N_("Add a tag"),
    "remove_tag": N_("Remove a tag"),
    "set_trait": N_("Set a trait"),
    "webhook": N_("Call a webhook"),
    "line_rich_menu": N_("Switch the LINE rich menu"),
    "issue_coupon": N_("Issue a coupon"),
    "award_points": N_("Award points"),
    "advisor_task": N_("Create a task for the advisor"),
    "exit": N_("Exit the journey"),
}
WAY_LABELS = {
    "next": N_("Then"),
    "on_event": N_("When the event comes"),
    "on_timeout": N_("When the wait times out"),
    "then": N_("When true"),
    "else": N_("When false"),
}
FLASHES = {
    "added": N_("The step is in the draft."),
    "saved": N_("The draft is saved."),
    "deleted": N_("The step is out of the draft."),
}
ARM_ROWS = 2  # empty rows offered below a split's arms, to add arms


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One setting of a step type in the form: ``kind`` is text, area (several lines), number, bool,
    integer, yaml (a mapping or any value, written in YAML), channel, template or coupon (choices)."""

    name: str
    kind: str
    label: str
    hint: str = ""


FIELDS: dict[str, list[FieldSpec]] = {
    "wait": [
        FieldSpec("duration", "text", N_("Wait for"), N_("e.g. 2h, 1d, 7d")),
        FieldSpec(
            "until_time", "text", N_("Or until the time of day"), N_("HH:MM, in the customer's time zone")
        ),
        FieldSpec("until_trait", "text", N_("Or until the date in the trait"), N_("e.g. birthday")),
        FieldSpec("offset", "text", N_("Offset from the trait's date"), N_("e.g. -1d: the day before")),
        FieldSpec("at", "text", N_("At the time of day"), N_("HH:MM, with a trait's date")),
    ],
    "wait_for": [
        FieldSpec("event", "text", N_("Event"), N_("e.g. Order Completed")),
        FieldSpec("timeout", "text", N_("Give up after"), N_("e.g. 3d")),
        FieldSpec("where", "area", N_("Only an event where"), N_("e.g. property.total >= 500")),
        FieldSpec("match", "yaml", N_("Same as the trigger event"), N_("awaited property: trigger property")),
    ],
    "branch": [FieldSpec("condition", "area", N_("Condition"), N_('e.g. has_tag("vip")'))],
    "split": [
        FieldSpec("holdout", "number", N_("Holdout percent"), N_("kept out, to measure against")),
        FieldSpec("seed", "text", N_("Seed"), N_("a new seed assigns everyone anew")),
    ],
    "send": [
        FieldSpec("channel", "channel", N_("Channel")),
        FieldSpec("template", "template", N_("Template")),
        FieldSpec("templates", "yaml", N_("Templates by channel, for best"), N_("line: welcome_line")),
        FieldSpec("transactional", "bool", N_("Transactional (not held by caps or quiet hours)")),
    ],
    "add_tag": [
        FieldSpec("tag", "text", N_("Tag")),
        FieldSpec("expires", "text", N_("Lapses after"), N_("e.g. 30d; empty: never")),
    ],
    "remove_tag": [FieldSpec("tag", "text", N_("Tag"))],
    "set_trait": [
        FieldSpec("trait", "text", N_("Trait")),
        FieldSpec("value", "yaml", N_("Value"), N_("null removes the trait")),
    ],
    "webhook": [
        FieldSpec("url", "text", N_("URL")),
        FieldSpec("body", "yaml", N_("Extra JSON fields"), N_("key: value, one per line")),
    ],
    "line_rich_menu": [FieldSpec("rich_menu_id", "text", N_("Rich menu id"), N_("richmenu-…"))],
    "issue_coupon": [FieldSpec("template", "coupon", N_("Coupon template"))],
    "award_points": [
        FieldSpec("points", "integer", N_("Points")),
        FieldSpec("reason", "text", N_("Reason"), N_("shown in the points history")),
        FieldSpec("expires", "text", N_("Lapses after"), N_("e.g. 365d; empty: the programme's validity")),
    ],
    "advisor_task": [
        FieldSpec("title", "text", N_("Task")),
        FieldSpec("kind", "text", N_("Kind"), N_("e.g. follow_up")),
        FieldSpec("due", "text", N_("Due after"), N_("e.g. 24h; empty: no due time")),
        FieldSpec("note", "area", N_("Note for the advisor")),
    ],
    "exit": [FieldSpec("reason", "text", N_("Reason"), N_("e.g. converted"))],
}


# --- reading the form ------------------------------------------------------------------------------


def _shown(value: Any, spec: FieldSpec) -> Any:
    """A stored setting as its form field shows it."""
    if spec.kind == "yaml":
        if value is None or value == {} or value == "":
            return "" if spec.name != "value" else yaml.safe_dump(value).strip()
        return yaml.safe_dump(value, allow_unicode=True, sort_keys=False, default_flow_style=False).strip()
    return "" if value is None else value


def _read(kind: str, form: dict[str, str]) -> dict[str, Any]:
    """A step's settings from the posted form, as the definition takes them; empty fields are left out."""
    fields: dict[str, Any] = {}
    for spec in FIELDS[kind]:
        raw = form.get(spec.name, "")
        if spec.kind == "bool":
            if raw:
                fields[spec.name] = True
            continue
        text = raw.strip()
        if not text and not (spec.kind == "yaml" and spec.name == "value" and spec.name in form):
            continue
        if spec.kind in ("number", "integer"):
            try:
                fields[spec.name] = float(text) if spec.kind == "number" else int(text)
            except ValueError:
                raise InvalidInput(f"{spec.name} must be a number", field=spec.name) from None
        elif spec.kind == "yaml":
            try:
                fields[spec.name] = yaml.safe_load(text) if text else None
            except yaml.YAMLError as error:
                raise InvalidInput(f"{spec.name} is not valid YAML: {error}", field=spec.name) from None
        else:
            fields[spec.name] = text
    if kind == "split":
        fields["arms"] = _arms(form)
    return fields


def _arms(form: dict[str, str]) -> list[dict[str, Any]]:
    arms: list[dict[str, Any]] = []
    index = 0
    while f"arm_name_{index}" in form:
        name = form[f"arm_name_{index}"].strip()
        if name:
            try:
                weight = float(form.get(f"arm_weight_{index}", "") or 1)
            except ValueError:
                raise InvalidInput(f"the weight of arm {name!r} must be a number", field="arms") from None
            arm: dict[str, Any] = {"name": name, "weight": weight}
            if form.get(f"arm_next_{index}"):
                arm["next"] = form[f"arm_next_{index}"]
            arms.append(arm)
        index += 1
    return arms


def _target(value: str) -> str | None:
    return value or None  # the empty choice: leave the journey


# --- the page --------------------------------------------------------------------------------------


def _editor_page(
    request: Request,
    session: ConsoleSession,
    conn: Connection,
    key: str,
    *,
    selected: str | None = None,
    insert: str | None = None,
    kind: str | None = None,
    values: dict[str, Any] | None = None,
    error: LifeloopError | None = None,
    flash: str = "",
    status: int = 200,
) -> HTMLResponse:
    ws, locale = session.workspace_id, session.user.locale
    journey = service.get_journey(conn, ws, key)
    draft = journey.draft
    defn = d.load_definition(draft)
    graph = flow(defn, journey_stats(conn, ws, key)["steps"] if journey.version else {})
    step = next((s for s in draft["steps"] if s["key"] == selected), None) if selected else None
    if selected and step is None:
        raise NotFound(f"no step {selected!r} in this journey")
    routes = editing.resolved(draft["steps"])
    after, way = (insert.partition(":")[0], insert.partition(":")[2]) if insert else (None, None)
    if insert and (after not in routes or way not in routes[after]):
        raise NotFound(f"no way {way!r} out of step {after!r}")
    kind = step["type"] if step is not None else (kind if kind in STEP_TYPES else None)
    shown = values if values is not None else (step or {})
    exits = routes.get(selected or "", {})
    return page(
        request,
        session,
        "journey_editor.html",
        status=status,
        workspace=get_workspace(conn, ws),
        journey=journey,
        name=localized(journey.name, locale, journey.key),
        graph=graph,
        step=step,
        after=after,
        way=way,
        way_label=WAY_LABELS.get(way or ""),
        kind=kind,
        # What the operator typed comes back as typed; a stored step is shown as its form writes it.
        fields=[
            (spec, shown.get(spec.name, "") if values is not None else _shown(shown.get(spec.name), spec))
            for spec in FIELDS.get(kind or "", [])
        ],
        arms=[*shown.get("arms", []), *({} for _ in range(ARM_ROWS))] if kind == "split" else [],
        exits=[(w, WAY_LABELS.get(w, w), t) for w, t in exits.items() if not w.startswith("arm:")],
        step_keys=[s["key"] for s in draft["steps"]],
        step_types=STEP_TYPES,
        channels=[*CHANNELS, "best"],
        templates=[t.key for t in list_templates(conn, ws)],
        coupon_templates=[t.key for t in list_coupon_templates(conn, ws)],
        errors=_errors(error),
        saved=FLASHES.get(flash, ""),
    )


def _errors(error: LifeloopError | None) -> list[dict[str, str]]:
    if error is None:
        return []
    return [{"field": str(e.get("field", "")), "message": str(e["message"])} for e in error.errors] or [
        {"field": error.field or "", "message": error.message}
    ]


@router.get("/journeys/{key}/edit", response_class=HTMLResponse)
def editor(
    request: Request,
    key: str,
    session: Editor,
    conn: Conn,
    step: str | None = None,
    insert: str | None = None,
    type: str | None = None,  # the query parameter's name
    saved: str = "",
) -> HTMLResponse:
    return _editor_page(request, session, conn, key, selected=step, insert=insert, kind=type, flash=saved)


def _save(
    engine: Any, session: ConsoleSession, key: str, draft: dict[str, Any], action: str, step: str
) -> None:
    with engine.begin() as tx:
        service.save_draft(tx, session.workspace_id, draft)
        record_action(tx, session.workspace_id, user_id=session.user.id, action=action, target=key,
                      detail={"step": step})  # fmt: skip


def _edit_url(key: str, step: str, flash: str) -> str:
    return f"/journeys/{key}/edit?step={quote(step)}&saved={quote(flash)}#panel"


@router.post("/journeys/{key}/edit/steps", response_class=HTMLResponse)
async def add_step(request: Request, key: str, session: Editor, engine: EngineDep, conn: Conn) -> Response:
    """Put a new step on a way out of a step (``after`` and ``way`` in the form)."""
    form = {k: str(v) for k, v in (await request.form()).items()}
    kind, after, way = form.get("type", ""), form.get("after", ""), form.get("way", "")
    journey = service.get_journey(conn, session.workspace_id, key)
    try:
        if kind not in STEP_TYPES:
            raise InvalidInput(f"there is no step type {kind!r}", field="type")
        new = {"type": kind, **_read(kind, form)}
        if form.get("key", "").strip():
            new["key"] = form["key"].strip()
        draft = editing.insert_step(journey.draft, after=after, way=way, step=new)
        added = next(
            s["key"] for s in draft["steps"] if s["key"] not in editing.resolved(journey.draft["steps"])
        )
        _save(engine, session, key, draft, "journey.step.add", added)
    except (InvalidInput, NotFound) as error:
        known = way in editing.resolved(journey.draft["steps"]).get(after, {})
        where = f"{after}:{way}" if known else None
        return _editor_page(request, session, fresh(conn), key, insert=where, kind=kind,
                            values=_values(kind, form), error=error, status=error.status)  # fmt: skip
    return RedirectResponse(_edit_url(key, added, "added"), status_code=303)


@router.post("/journeys/{key}/edit/steps/{step}", response_class=HTMLResponse)
async def change_step(
    request: Request, key: str, step: str, session: Editor, engine: EngineDep, conn: Conn
) -> Response:
    """Change a step's settings and where each of its ways leads."""
    form = {k: str(v) for k, v in (await request.form()).items()}
    journey = service.get_journey(conn, session.workspace_id, key)
    current = next((s for s in journey.draft["steps"] if s["key"] == step), None)
    if current is None:
        raise NotFound(f"no step {step!r} in this journey")
    try:
        ways = {w: _target(form[f"way_{w}"]) for w in editing.ways(current) if f"way_{w}" in form}
        draft = editing.update_step(journey.draft, step, _read(current["type"], form), ways)
        _save(engine, session, key, draft, "journey.step.change", step)
    except (InvalidInput, NotFound) as error:
        typed = _values(current["type"], form)
        return _editor_page(request, session, fresh(conn), key, selected=step, values=typed, error=error,
                            status=error.status)  # fmt: skip
    return RedirectResponse(_edit_url(key, step, "saved"), status_code=303)


@router.post("/journeys/{key}/edit/steps/{step}/delete", response_class=HTMLResponse)
def delete_step(
    request: Request, key: str, step: str, session: Editor, engine: EngineDep, conn: Conn
) -> Response:
    """Take a step out; the runs that would have reached it go where it led."""
    journey = service.get_journey(conn, session.workspace_id, key)
    try:
        draft = editing.delete_step(journey.draft, step)
        _save(engine, session, key, draft, "journey.step.delete", step)
    except InvalidInput as error:
        return _editor_page(request, session, fresh(conn), key, selected=step, error=error,
                            status=error.status)  # fmt: skip
    return RedirectResponse(f"/journeys/{key}/edit?saved=deleted", status_code=303)


def _values(kind: str, form: dict[str, str]) -> dict[str, Any]:
    """What the operator typed, shown again beside the error (as the stored form of each field)."""
    values: dict[str, Any] = {}
    for spec in FIELDS.get(kind, []):
        raw = form.get(spec.name, "")
        values[spec.name] = bool(raw) if spec.kind == "bool" else raw
    if kind == "split":
        values["arms"] = [
            {"name": form.get(f"arm_name_{i}", ""), "weight": form.get(f"arm_weight_{i}", ""),
             "next": form.get(f"arm_next_{i}", "")}
            for i in range(50) if f"arm_name_{i}" in form and form[f"arm_name_{i}"].strip()
        ]  # fmt: skip
    return values
