"""Segments: the saved audiences with their member counts, and a builder over the condition language.

The builder's live count and member preview come from ``query.preview``, the function behind
``POST /api/v1/segments/preview``; saving, deleting and exporting call what the REST routes call
(``definitions`` then ``batch.after_definition_change``; ``query.export_csv``), so the console and the API
always agree on who is in a segment.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy import Connection

from lifeloop.accounts.models import ConsoleSession
from lifeloop.accounts.service import record_action
from lifeloop.audience import batch, definitions, query
from lifeloop.audience.state import Change
from lifeloop.errors import InvalidInput, LifeloopError
from lifeloop.lifecycle.service import active_model
from lifeloop.store.schema import utcnow
from lifeloop.web.console.auth import Analyst, Editor, Reader
from lifeloop.web.console.i18n import translations
from lifeloop.web.console.pages.data import fresh
from lifeloop.web.console.render import page
from lifeloop.web.deps import Conn, EngineDep
from lifeloop.workspaces.service import get_workspace

router = APIRouter(include_in_schema=False)

PREVIEW_ROWS = 20


def _quoted(text: str) -> str:
    """A string literal of the condition language (JSON escapes, double quotes)."""
    return json.dumps(text, ensure_ascii=False)


def condition_helpers(
    conn: Connection, workspace_id: int, *, exclude_segment: str | None = None
) -> dict[str, Any]:
    """Clauses the builder can insert: the workspace's tags, other segments and lifecycle stages, each as
    condition text ready to paste (quoted by the language's own rules)."""
    tags = {row["tag"] for row in query.tag_counts(conn, workspace_id, utcnow())}
    tags |= {rule["tag"] for rule in definitions.list_tag_rules(conn, workspace_id)}
    model = active_model(conn, workspace_id)
    return {
        "tags": [(tag, f"has_tag({_quoted(tag)})") for tag in sorted(tags)],
        "segments": [
            (s["key"], f"in_segment({_quoted(s['key'])})")
            for s in definitions.list_segments(conn, workspace_id)
            if s["key"] != exclude_segment
        ],
        "stages": [(s.key, f"in_stage({_quoted(s.key)})") for s in model.stages] if model else [],
    }


def run_preview(conn: Connection, workspace_id: int, condition: str) -> tuple[dict[str, Any] | None, str]:
    """``query.preview`` of a condition as typed: (result, "") or (None, the parse error); blank → nothing."""
    if not condition.strip():
        return None, ""
    try:
        return query.preview(conn, workspace_id, condition, now=utcnow(), limit=PREVIEW_ROWS), ""
    except InvalidInput as failure:
        return None, failure.message


def _own_changes(changes: list[Change], key: str) -> dict[str, int]:
    counts = {"entered": 0, "exited": 0}
    for change in changes:
        if change.kind == "segment" and change.key == key and change.action in counts:
            counts[change.action] += 1
    return counts


def _builder(
    request: Request,
    session: ConsoleSession,
    conn: Connection,
    *,
    segment: dict[str, Any] | None,
    form: dict[str, str],
    status: int = 200,
    error: str = "",
    flash: str = "",
) -> HTMLResponse:
    """The builder page: a saved segment (``segment``) or a new one, with the form as typed."""
    ws = session.workspace_id
    preview, preview_error = run_preview(conn, ws, form["condition"])
    return page(
        request,
        session,
        "segments_edit.html",
        status=status,
        workspace=get_workspace(conn, ws),
        segment=segment,
        members=query.member_count(conn, ws, segment["key"]) if segment else None,
        form=form,
        error=error,
        preview=preview,
        preview_error=preview_error,
        preview_rows=PREVIEW_ROWS,
        helpers=condition_helpers(conn, ws, exclude_segment=segment["key"] if segment else None),
        flash=flash,
        flash_kind="",
    )


def _form_of(segment: dict[str, Any]) -> dict[str, str]:
    return {
        "key": segment["key"],
        "name": segment["name"] or "",
        "description": segment["description"] or "",
        "condition": segment["condition"],
    }


@router.get("/segments", response_class=HTMLResponse)
def segment_list(request: Request, session: Reader, conn: Conn) -> HTMLResponse:
    ws = session.workspace_id
    found = definitions.list_segments(conn, ws)
    rows = [{**s, "members": query.member_count(conn, ws, s["key"])} for s in found]
    sizes = {
        "columns": ["segment", "members"],
        "data": [[s["name"] or s["key"], s["members"]] for s in rows],
        "chart": {"type": "bar", "x": "segment", "series": ["members"]},
    }
    return page(
        request, session, "segments.html", workspace=get_workspace(conn, ws), segments=rows, sizes=sizes
    )


@router.get("/segments/new", response_class=HTMLResponse)
def new_segment(request: Request, session: Reader, conn: Conn, condition: str = "") -> HTMLResponse:
    """Editors build and save here; other roles can try a condition (count and preview, nothing saved)."""
    form = {"key": "", "name": "", "description": "", "condition": condition}
    return _builder(request, session, conn, segment=None, form=form)


@router.post("/segments/preview", response_class=HTMLResponse)
def preview_fragment(
    request: Request, session: Reader, conn: Conn, condition: Annotated[str, Form()] = ""
) -> HTMLResponse:
    """The live count and first members of the condition being typed (an htmx fragment); a condition that
    does not parse answers 400 with its error, which the builder shows in place of the count."""
    preview, error = run_preview(conn, session.workspace_id, condition)
    return page(
        request,
        session,
        "segments_preview.html",
        status=400 if error else 200,
        preview=preview,
        preview_error=error,
        preview_rows=PREVIEW_ROWS,
    )


@router.post("/segments", response_class=HTMLResponse)
def create(
    request: Request,
    session: Editor,
    engine: EngineDep,
    conn: Conn,
    key: Annotated[str, Form()],
    condition: Annotated[str, Form()],
    name: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
) -> Response:
    gettext = translations(session.user.locale).gettext
    ws = session.workspace_id
    form = {"key": key, "name": name, "description": description, "condition": condition}
    try:
        with engine.begin() as tx:
            row, definition = definitions.create_segment(
                tx, ws, key, name or None, condition, description or None
            )
            record_action(tx, ws, user_id=session.user.id, action="segment.create", target=key,
                          detail={"condition": condition, "name": row["name"]})  # fmt: skip
    except LifeloopError as failure:
        return _builder(
            request,
            session,
            fresh(conn),
            segment=None,
            form=form,
            status=failure.status,
            error=failure.message,
        )
    counts = _own_changes(batch.after_definition_change(engine, ws, definition), key)
    segment = definitions.get_segment(fresh(conn), ws, key)
    flash = gettext("Segment saved: %(entered)s entered.") % {"entered": counts["entered"]}
    return _builder(request, session, conn, segment=segment, form=_form_of(segment), flash=flash)


@router.get("/segments/{key}", response_class=HTMLResponse)
def segment_page(request: Request, key: str, session: Reader, conn: Conn) -> HTMLResponse:
    segment = definitions.get_segment(conn, session.workspace_id, key)
    return _builder(request, session, conn, segment=segment, form=_form_of(segment))


@router.post("/segments/{key}/save", response_class=HTMLResponse)
def update(
    request: Request,
    key: str,
    session: Editor,
    engine: EngineDep,
    conn: Conn,
    condition: Annotated[str, Form()],
    name: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
) -> Response:
    gettext = translations(session.user.locale).gettext
    ws = session.workspace_id
    current = definitions.get_segment(conn, ws, key)  # another workspace's key: 404 before anything else
    form = {"key": key, "name": name, "description": description, "condition": condition}
    try:
        with engine.begin() as tx:
            _row, definition = definitions.update_segment(
                tx, ws, key, name=name or None, condition=condition, description=description
            )
            record_action(tx, ws, user_id=session.user.id, action="segment.update", target=key,
                          detail={"condition": condition, "before": current["condition"]})  # fmt: skip
    except LifeloopError as failure:
        return _builder(
            request, session, fresh(conn), segment=current, form=form, status=failure.status,
            error=failure.message,
        )  # fmt: skip
    counts = _own_changes(batch.after_definition_change(engine, ws, definition), key)
    segment = definitions.get_segment(fresh(conn), ws, key)
    flash = gettext("Segment saved: %(entered)s entered, %(exited)s exited.") % counts
    return _builder(request, session, conn, segment=segment, form=_form_of(segment), flash=flash)


@router.post("/segments/{key}/delete", response_class=HTMLResponse)
def delete(request: Request, key: str, session: Editor, engine: EngineDep, conn: Conn) -> Response:
    """A segment another definition reads is refused (409), shown on its page."""
    ws = session.workspace_id
    current = definitions.get_segment(conn, ws, key)
    try:
        with engine.begin() as tx:
            definitions.delete_segment(tx, ws, key)
            record_action(tx, ws, user_id=session.user.id, action="segment.delete", target=key,
                          detail={"condition": current["condition"]})  # fmt: skip
    except LifeloopError as failure:
        return _builder(
            request, session, fresh(conn), segment=current, form=_form_of(current), status=failure.status,
            error=failure.message,
        )  # fmt: skip
    return RedirectResponse("/segments", status_code=303)


@router.get("/segments/{key}/export")
def export(key: str, session: Analyst, engine: EngineDep, conn: Conn) -> StreamingResponse:
    """Members as CSV, streamed by the API's own exporter; exporting personal data is audited."""
    ws = session.workspace_id
    segment_id = query.segment_id_of(conn, ws, key)
    with engine.begin() as tx:
        record_action(tx, ws, user_id=session.user.id, action="segment.export", target=key)
    stamp = utcnow().strftime("%Y%m%d")
    return StreamingResponse(
        query.export_csv(engine, ws, segment_id),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{key}-{stamp}.csv"'},
    )
