"""Broadcasts: the list, a draft written as a form or as YAML with the audience estimate before anything
is saved, scheduling and cancelling (the sending roles only), and each variant's results against the
holdout."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Connection

from lifeloop.accounts.models import ConsoleSession
from lifeloop.accounts.service import record_action
from lifeloop.audience.definitions import list_segments
from lifeloop.broadcasts import service
from lifeloop.broadcasts.definition import parse_definition
from lifeloop.broadcasts.stats import broadcast_stats
from lifeloop.errors import InvalidInput, LifeloopError
from lifeloop.lifecycle.service import active_model
from lifeloop.messaging.policy import CHANNELS
from lifeloop.messaging.templates.service import list_templates
from lifeloop.web.console.auth import Editor, Reader, Sender
from lifeloop.web.console.i18n import N_
from lifeloop.web.console.pages.data import fresh
from lifeloop.web.console.pages.lifecycle import localized
from lifeloop.web.console.render import page
from lifeloop.web.deps import Conn, EngineDep
from lifeloop.workspaces.service import get_workspace

router = APIRouter(include_in_schema=False)

STATUSES = {
    N_("draft"): "",
    N_("scheduled"): "warn",
    N_("sending"): "warn",
    N_("sent"): "ok",
    N_("cancelled"): "bad",
}
SCHEDULES = {"now": N_("Now"), "at": N_("At a time"), "best_hour": N_("Each customer's best hour")}


@dataclass
class DraftForm:
    """What the new-broadcast form sent: the audience, message and schedule as fields, or the whole
    definition as YAML (which then wins)."""

    key: str = ""
    name: str = ""
    segment: str = ""
    tags: str = ""
    tags_match: str = "any"
    stages: list[str] = field(default_factory=list)
    condition: str = ""
    channel: str = "line"
    template: str = ""
    holdout: str = "0"
    schedule: str = "now"
    at: str = ""
    until: str = ""
    definition: str = ""

    def as_definition(self) -> Any:
        """The definition as the API takes it; InvalidInput for YAML that does not read."""
        if self.definition.strip():
            try:
                return yaml.safe_load(self.definition)
            except yaml.YAMLError as error:
                raise InvalidInput(f"the definition is not valid YAML: {error}", field="definition") from None
        audience: dict[str, Any] = {}
        if self.segment:
            audience["segment"] = self.segment
        tags = [t for t in re.split(r"[,\s]+", self.tags) if t]
        if tags:
            audience["tags"] = tags
            audience["tags_match"] = self.tags_match
        if self.stages:
            audience["stages"] = self.stages
        if self.condition.strip():
            audience["condition"] = self.condition.strip()
        schedule: dict[str, Any] = {"mode": self.schedule}
        if self.at and self.schedule != "now":
            schedule["at"] = self.at
        if self.until and self.schedule == "best_hour":
            schedule["until"] = self.until
        try:
            holdout = float(self.holdout or 0)
        except ValueError:
            raise InvalidInput("holdout is a percentage, such as 10", field="holdout") from None
        return {
            "audience": audience,
            "channels": [{"channel": self.channel, "template": self.template}],
            "holdout": holdout,
            "schedule": schedule,
        }


def draft_form(
    key: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    segment: Annotated[str, Form()] = "",
    tags: Annotated[str, Form()] = "",
    tags_match: Annotated[str, Form()] = "any",
    stages: Annotated[list[str] | None, Form()] = None,
    condition: Annotated[str, Form()] = "",
    channel: Annotated[str, Form()] = "line",
    template: Annotated[str, Form()] = "",
    holdout: Annotated[str, Form()] = "0",
    schedule: Annotated[str, Form()] = "now",
    at: Annotated[str, Form()] = "",
    until: Annotated[str, Form()] = "",
    definition: Annotated[str, Form()] = "",
) -> DraftForm:
    return DraftForm(key, name, segment, tags, tags_match, stages or [], condition, channel, template,
                     holdout, schedule, at, until, definition)  # fmt: skip


Draft = Annotated[DraftForm, Depends(draft_form)]


@router.get("/broadcasts", response_class=HTMLResponse)
def broadcasts(request: Request, session: Reader, conn: Conn) -> HTMLResponse:
    ws = session.workspace_id
    return page(
        request,
        session,
        "broadcasts.html",
        workspace=get_workspace(conn, ws),
        items=service.list_broadcasts(conn, ws),
        statuses=STATUSES,
    )


def _stage_choices(conn: Connection, session: ConsoleSession) -> list[tuple[str, str]]:
    model = active_model(conn, session.workspace_id)
    if model is None:
        return []
    return [(f"{model.key}:{s.key}", localized(s.names, session.user.locale, s.key)) for s in model.stages]


def _new_page(
    request: Request,
    session: ConsoleSession,
    conn: Connection,
    form: DraftForm,
    *,
    error: str = "",
    estimate: dict[str, Any] | None = None,
    status: int = 200,
) -> HTMLResponse:
    ws = session.workspace_id
    return page(
        request,
        session,
        "broadcast_new.html",
        status=status,
        workspace=get_workspace(conn, ws),
        form=form,
        segments=list_segments(conn, ws),
        templates=list_templates(conn, ws),
        stage_choices=_stage_choices(conn, session),
        channels=CHANNELS,
        schedules=SCHEDULES,
        estimate_error=error,
        estimate=estimate,
    )


@router.get("/broadcasts/new", response_class=HTMLResponse)
def new(request: Request, session: Editor, conn: Conn) -> HTMLResponse:
    return _new_page(request, session, conn, DraftForm())


@router.post("/broadcasts/estimate", response_class=HTMLResponse)
def estimate(request: Request, session: Reader, conn: Conn, form: Draft) -> HTMLResponse:
    """Who the definition would reach, saving nothing (the API's ``POST /estimate``); htmx gets the
    estimate alone, a plain form the whole page."""
    error, result, status = "", None, 200
    try:
        result = service.estimate(conn, session.workspace_id, parse_definition(form.as_definition()))
    except LifeloopError as failure:
        error, status = failure.message, failure.status
    if request.headers.get("hx-request"):
        workspace = get_workspace(conn, session.workspace_id)
        return page(request, session, "broadcast_estimate.html", status=status, workspace=workspace,
                    estimate_error=error, estimate=result)  # fmt: skip
    return _new_page(request, session, conn, form, error=error, estimate=result, status=status)


@router.post("/broadcasts", response_class=HTMLResponse)
def create(request: Request, session: Editor, engine: EngineDep, conn: Conn, form: Draft) -> Response:
    """A draft: nothing is sent until someone who may send schedules it."""
    try:
        with engine.begin() as tx:
            made = service.create_broadcast(
                tx, session.workspace_id, key=form.key, name=form.name, definition=form.as_definition()
            )
            record_action(tx, session.workspace_id, user_id=session.user.id, action="broadcast.create",
                          target=made.key)  # fmt: skip
    except LifeloopError as failure:
        return _new_page(request, session, fresh(conn), form, error=failure.message, status=failure.status)
    return RedirectResponse(f"/broadcasts/{made.key}", status_code=303)


def _broadcast_page(
    request: Request,
    session: ConsoleSession,
    conn: Connection,
    key: str,
    *,
    flash: str = "",
    source: str | None = None,
    error: str = "",
    status: int = 200,
) -> HTMLResponse:
    ws = session.workspace_id
    item = service.get_broadcast(conn, ws, key)
    reach = (
        service.estimate(conn, ws, item.parsed(), broadcast_id=item.id)
        if item.status in ("draft", "scheduled")
        else None
    )
    return page(
        request,
        session,
        "broadcast.html",
        status=status,
        workspace=get_workspace(conn, ws),
        item=item,
        estimate=reach,
        estimate_error="",
        stats=broadcast_stats(conn, ws, key),
        source=source
        if source is not None
        else yaml.safe_dump(item.definition, allow_unicode=True, sort_keys=False),
        statuses=STATUSES,
        error=error,
        flash=flash,
        flash_kind="error" if flash else "",
    )


@router.get("/broadcasts/{key}", response_class=HTMLResponse)
def broadcast(request: Request, key: str, session: Reader, conn: Conn) -> HTMLResponse:
    return _broadcast_page(request, session, conn, key)


@router.post("/broadcasts/{key}/definition", response_class=HTMLResponse)
def change(
    request: Request,
    key: str,
    session: Editor,
    engine: EngineDep,
    conn: Conn,
    source: Annotated[str, Form(alias="definition")] = "",
) -> Response:
    """Change a draft's definition (a scheduled one must be cancelled and copied instead)."""
    service.get_broadcast(conn, session.workspace_id, key)  # another workspace's key: 404, not a form error
    try:
        try:
            definition = yaml.safe_load(source)
        except yaml.YAMLError as failure:
            raise InvalidInput(f"the definition is not valid YAML: {failure}", field="definition") from None
        with engine.begin() as tx:
            service.update_broadcast(tx, session.workspace_id, key, definition=definition)
            record_action(tx, session.workspace_id, user_id=session.user.id, action="broadcast.update",
                          target=key)  # fmt: skip
    except LifeloopError as failure:
        return _broadcast_page(request, session, fresh(conn), key, source=source, error=failure.message,
                               status=failure.status)  # fmt: skip
    return RedirectResponse(f"/broadcasts/{key}", status_code=303)


@router.post("/broadcasts/{key}/schedule", response_class=HTMLResponse)
def schedule(request: Request, key: str, session: Sender, engine: EngineDep, conn: Conn) -> Response:
    """Send it at its time, after every check that could stop it later (refused with the reason)."""
    service.get_broadcast(conn, session.workspace_id, key)
    try:
        with engine.begin() as tx:
            done = service.schedule_broadcast(tx, session.workspace_id, key)
            send_at = done.send_at.isoformat() if done.send_at else None
            record_action(tx, session.workspace_id, user_id=session.user.id, action="broadcast.schedule",
                          target=key, detail={"send_at": send_at})  # fmt: skip
    except LifeloopError as failure:
        return _broadcast_page(
            request, session, fresh(conn), key, flash=failure.message, status=failure.status
        )
    return RedirectResponse(f"/broadcasts/{key}", status_code=303)


@router.post("/broadcasts/{key}/cancel", response_class=HTMLResponse)
def cancel(request: Request, key: str, session: Sender, engine: EngineDep, conn: Conn) -> Response:
    """Stop what has not gone out; queued messages are suppressed as "broadcast cancelled"."""
    service.get_broadcast(conn, session.workspace_id, key)
    try:
        with engine.begin() as tx:
            done = service.cancel_broadcast(tx, session.workspace_id, key)
            record_action(tx, session.workspace_id, user_id=session.user.id, action="broadcast.cancel",
                          target=key, detail={"messages_stopped": done["messages_stopped"]})  # fmt: skip
    except LifeloopError as failure:
        return _broadcast_page(
            request, session, fresh(conn), key, flash=failure.message, status=failure.status
        )
    return RedirectResponse(f"/broadcasts/{key}", status_code=303)
