"""Tags: rule tags (a tag and a condition), event tags (an event's property becomes ``prefix:value``),
the shipped presets, and the tags customers hold now.

Every write calls what ``/api/v1/tags`` calls: ``definitions`` in a transaction (with the audit entry),
then the same recompute the route runs, so a tag rule saved here tags customers at once, as over the API.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import Connection

from lifeloop.accounts.models import ConsoleSession
from lifeloop.accounts.service import record_action
from lifeloop.audience import batch, definitions, query
from lifeloop.audience.state import Change
from lifeloop.errors import LifeloopError, NotFound
from lifeloop.store.schema import utcnow
from lifeloop.web.console.auth import Editor, Reader
from lifeloop.web.console.i18n import translations
from lifeloop.web.console.pages.data import fresh
from lifeloop.web.console.render import page
from lifeloop.web.deps import AnalyticsPathDep, Conn, EngineDep
from lifeloop.workspaces.service import get_workspace

router = APIRouter(include_in_schema=False)

EMPTY_RULE = {"tag": "", "condition": "", "description": "", "emit_on_add": ""}
EMPTY_EVENT_RULE = {"event": "", "property": "", "prefix": "", "ttl": ""}


def _tags_page(
    request: Request,
    session: ConsoleSession,
    conn: Connection,
    *,
    status: int = 200,
    rule_form: dict[str, str] | None = None,
    event_form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    flash: str = "",
) -> HTMLResponse:
    """The whole page; ``errors`` puts a message beside the form it belongs to (rule, event, preset, list)."""
    fresh(conn)
    ws = session.workspace_id
    held = query.tag_counts(conn, ws, utcnow())
    holders: dict[str, int] = {}
    for row in held:
        holders[row["tag"]] = holders.get(row["tag"], 0) + row["profiles"]
    rules = [{**r, "profiles": holders.get(r["tag"], 0)} for r in definitions.list_tag_rules(conn, ws)]
    form = rule_form or EMPTY_RULE
    return page(
        request,
        session,
        "tags.html",
        status=status,
        workspace=get_workspace(conn, ws),
        rules=rules,
        event_rules=definitions.list_event_tag_rules(conn, ws),
        held=held,
        presets=definitions.PRESET_KEYS,
        rule_form=form,
        editing=any(r["tag"] == form["tag"] for r in rules),
        event_form=event_form or EMPTY_EVENT_RULE,
        errors={"list": "", "rule": "", "event": "", "preset": "", **(errors or {})},
        flash=flash,
        flash_kind="",
    )


def _tag_changes(changes: list[Change], tag: str) -> dict[str, int]:
    counts = {"added": 0, "removed": 0}
    for change in changes:
        if change.kind == "tag" and change.key == tag and change.action in counts:
            counts[change.action] += 1
    return counts


@router.get("/tags", response_class=HTMLResponse)
def tags(request: Request, session: Reader, conn: Conn, edit: str | None = None) -> HTMLResponse:
    """``?edit=TAG`` fills the rule form with that tag's rule (404 for a tag with no rule here)."""
    if edit is None:
        return _tags_page(request, session, conn)
    rule = definitions.get_tag_rule(conn, session.workspace_id, edit)
    form = {
        "tag": rule["tag"],
        "condition": rule["condition"],
        "description": rule["description"] or "",
        "emit_on_add": rule["emit_on_add"] or "",
    }
    return _tags_page(request, session, conn, rule_form=form)


@router.post("/tags/rules", response_class=HTMLResponse)
def save_rule(
    request: Request,
    session: Editor,
    engine: EngineDep,
    conn: Conn,
    tag: Annotated[str, Form()],
    condition: Annotated[str, Form()],
    description: Annotated[str, Form()] = "",
    emit_on_add: Annotated[str, Form()] = "",
) -> Response:
    """Create or replace a rule tag (as ``PUT /api/v1/tags/rules/{tag}``); customers are tagged at once."""
    gettext = translations(session.user.locale).gettext
    ws = session.workspace_id
    form = {"tag": tag, "condition": condition, "description": description, "emit_on_add": emit_on_add}
    try:
        with engine.begin() as tx:
            try:
                before: str | None = definitions.get_tag_rule(tx, ws, tag)["condition"]
            except NotFound:
                before = None
            _row, definition = definitions.put_tag_rule(
                tx, ws, tag, condition, description=description or None, emit_on_add=emit_on_add or None
            )
            action = "tag_rule.create" if before is None else "tag_rule.update"
            detail = {"condition": condition, "before": before, "emit_on_add": emit_on_add or None}
            record_action(tx, ws, user_id=session.user.id, action=action, target=tag, detail=detail)
    except LifeloopError as failure:
        return _tags_page(
            request, session, conn, status=failure.status, rule_form=form, errors={"rule": failure.message}
        )
    counts = _tag_changes(batch.after_definition_change(engine, ws, definition), tag)
    flash = gettext("Tag rule saved: %(added)s tagged, %(removed)s untagged.") % counts
    return _tags_page(request, session, conn, flash=flash)


@router.post("/tags/rules/delete", response_class=HTMLResponse)
def delete_rule(
    request: Request,
    session: Editor,
    engine: EngineDep,
    conn: Conn,
    copy: AnalyticsPathDep,
    tag: Annotated[str, Form()],
) -> Response:
    """The tags the rule gave are removed (``Tag Removed`` events), by the route's own recompute."""
    gettext = translations(session.user.locale).gettext
    ws = session.workspace_id
    try:
        with engine.begin() as tx:
            condition = definitions.get_tag_rule(tx, ws, tag)["condition"]
            definitions.delete_tag_rule(tx, ws, tag)
            record_action(tx, ws, user_id=session.user.id, action="tag_rule.delete", target=tag,
                          detail={"condition": condition})  # fmt: skip
    except LifeloopError as failure:  # read by another definition: 409; no such rule here: 404
        return _tags_page(request, session, conn, status=failure.status, errors={"list": failure.message})
    batch.recompute_audience(engine, ws, event_tags=False, analytics_path=copy)
    return _tags_page(request, session, conn, flash=gettext("Tag rule deleted."))


@router.post("/tags/event-rules", response_class=HTMLResponse)
def add_event_rule(
    request: Request,
    session: Editor,
    engine: EngineDep,
    conn: Conn,
    event: Annotated[str, Form()],
    property: Annotated[str, Form()],
    prefix: Annotated[str, Form()],
    ttl: Annotated[str, Form()] = "",
) -> Response:
    """Applies to events from now on, as over the API (``lifeloop recompute`` applies it to the past)."""
    gettext = translations(session.user.locale).gettext
    ws = session.workspace_id
    form = {"event": event, "property": property, "prefix": prefix, "ttl": ttl}
    try:
        with engine.begin() as tx:
            rule = definitions.add_event_tag_rule(tx, ws, event, property, prefix, ttl or None)
            detail = {"id": rule["id"], "event": event, "property": property, "ttl": ttl or None}
            record_action(tx, ws, user_id=session.user.id, action="event_tag_rule.add",
                          target=f"{prefix}:*", detail=detail)  # fmt: skip
    except LifeloopError as failure:
        return _tags_page(
            request, session, conn, status=failure.status, event_form=form, errors={"event": failure.message}
        )
    return _tags_page(request, session, conn, flash=gettext("Event tag rule saved."))


@router.post("/tags/event-rules/{rule_id}/delete", response_class=HTMLResponse)
def delete_event_rule(
    request: Request, rule_id: int, session: Editor, engine: EngineDep, conn: Conn
) -> Response:
    gettext = translations(session.user.locale).gettext
    ws = session.workspace_id
    with engine.begin() as tx:  # another workspace's rule id: NotFound, a 404 page
        definitions.delete_event_tag_rule(tx, ws, rule_id)
        record_action(tx, ws, user_id=session.user.id, action="event_tag_rule.delete", target=str(rule_id))
    return _tags_page(request, session, conn, flash=gettext("Event tag rule deleted."))


@router.post("/tags/presets", response_class=HTMLResponse)
def install_preset(
    request: Request,
    session: Editor,
    engine: EngineDep,
    conn: Conn,
    copy: AnalyticsPathDep,
    preset: Annotated[str, Form()],
) -> Response:
    gettext = translations(session.user.locale).gettext
    ws = session.workspace_id
    try:
        with engine.begin() as tx:
            installed: dict[str, Any] = definitions.install_preset(tx, ws, preset)
            record_action(tx, ws, user_id=session.user.id, action="tag_preset.install", target=preset,
                          detail=installed)  # fmt: skip
    except LifeloopError as failure:
        return _tags_page(request, session, conn, status=failure.status, errors={"preset": failure.message})
    if installed["tag_rules"]:
        batch.recompute_audience(engine, ws, event_tags=False, analytics_path=copy)
    flash = (
        gettext("Preset installed: %(event_tag_rules)s event tag rules, %(tag_rules)s tag rules.") % installed
    )
    return _tags_page(request, session, conn, flash=flash)
