"""Lifecycle: the active model with today's stage counts, its versions, presets, and a YAML editor that
validates a model and previews how many customers each stage would hold before it is activated."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Connection

from lifeloop.accounts.models import ConsoleSession
from lifeloop.accounts.service import record_action
from lifeloop.errors import InvalidInput, LifeloopError
from lifeloop.lifecycle.definition import LifecycleModel, load_model, preset, preset_keys
from lifeloop.lifecycle.service import (
    active_model,
    install_model,
    install_preset,
    list_models,
    model_version,
    preview_distribution,
    stage_distribution,
)
from lifeloop.web.console.auth import Editor, Reader
from lifeloop.web.console.pages.data import fresh
from lifeloop.web.console.pages.overview import stage_labels
from lifeloop.web.console.render import page
from lifeloop.web.deps import Conn, EngineDep
from lifeloop.workspaces.service import get_workspace

router = APIRouter(include_in_schema=False)


def localized(names: dict[str, str], locale: str, default: str = "") -> str:
    """A name in the reader's language: Traditional Chinese falls back to Simplified, then English."""
    for key in (locale, "zh-CN" if locale == "zh-TW" else locale, "en"):
        if names.get(key):
            return names[key]
    return default


def _described(model: LifecycleModel, locale: str) -> dict[str, Any]:
    return {
        "key": model.key,
        "version": model.version,
        "name": localized(model.names, locale, model.key),
        "description": localized(model.description, locale),
        "stages": [
            {
                "key": s.key,
                "name": localized(s.names, locale, s.key),
                "when": s.source,
                "emit": s.emit_on_enter,
            }
            for s in model.stages
        ],
    }


def _overview(
    request: Request, session: ConsoleSession, conn: Connection, *, flash: str = "", status: int = 200
) -> HTMLResponse:
    ws, locale = session.workspace_id, session.user.locale
    model = active_model(conn, ws)
    counts = stage_distribution(conn, ws) if model else {}
    labels = stage_labels(model, locale)
    chart = (
        {
            "columns": ["stage", "users"],
            "data": [[key, n] for key, n in counts.items()],
            "chart": {"type": "pie", "name": "stage", "value": "users"},
        }
        if any(counts.values())
        else None
    )
    presets = [_described(preset(key), locale) for key in preset_keys()]
    versions = list_models(conn, ws)
    current = next((v for v in versions if v["active"]), None)
    return page(
        request,
        session,
        "lifecycle.html",
        status=status,
        workspace=get_workspace(conn, ws),
        model=_described(model, locale) if model else None,
        counts=counts,
        total=sum(counts.values()),
        chart=chart,
        labels=labels,
        presets=presets,
        versions=versions,
        current=current,
        flash=flash,
        flash_kind="error" if flash else "",
    )


@router.get("/lifecycle", response_class=HTMLResponse)
def lifecycle(request: Request, session: Reader, conn: Conn) -> HTMLResponse:
    return _overview(request, session, conn)


@router.get("/lifecycle/models/{key}/{version}", response_class=HTMLResponse)
def view_version(request: Request, key: str, version: int, session: Reader, conn: Conn) -> HTMLResponse:
    model = model_version(conn, session.workspace_id, key, version)
    stored = {(m["key"], m["version"]): m for m in list_models(conn, session.workspace_id)}
    return page(
        request,
        session,
        "lifecycle_model.html",
        workspace=get_workspace(conn, session.workspace_id),
        model=_described(model, session.user.locale),
        stored=stored[(key, version)],
        source=model.source,
    )


def _preview(conn: Connection, session: ConsoleSession, source: str) -> dict[str, Any]:
    """The model in ``source`` checked, and what it would do to today's customers (or the error)."""
    try:
        model = load_model(source)
    except InvalidInput as error:
        return {"error": error.message, "model": None, "counts": {}, "current": {}, "outside": 0}
    preview = preview_distribution(conn, session.workspace_id, model)
    active = active_model(conn, session.workspace_id)
    current = stage_distribution(conn, session.workspace_id) if active and active.key == model.key else {}
    return {
        "error": "",
        "model": _described(model, session.user.locale),
        "counts": preview.stages,
        "current": current,
        "outside": preview.outside,
    }


def _editor(
    request: Request,
    session: ConsoleSession,
    conn: Connection,
    source: str,
    *,
    preview: dict[str, Any] | None = None,
    status: int = 200,
) -> HTMLResponse:
    return page(
        request,
        session,
        "lifecycle_edit.html",
        status=status,
        workspace=get_workspace(conn, session.workspace_id),
        source=source,
        preview=preview,
    )


@router.get("/lifecycle/edit", response_class=HTMLResponse)
def edit(
    request: Request,
    session: Editor,
    conn: Conn,
    key: str | None = None,
    version: int | None = None,
    start: Annotated[str | None, Query(alias="preset")] = None,
) -> HTMLResponse:
    """Start from a stored version (``key`` and ``version``), a preset, or else the active model."""
    if key is not None and version is not None:
        source = model_version(conn, session.workspace_id, key, version).source
    elif start is not None:
        source = preset(start).source
    else:
        model = active_model(conn, session.workspace_id)
        source = model.source if model else preset("line").source
    return _editor(request, session, conn, source)


@router.post("/lifecycle/validate", response_class=HTMLResponse)
def validate(
    request: Request, session: Editor, conn: Conn, source: Annotated[str, Form(alias="yaml")] = ""
) -> HTMLResponse:
    """Check the YAML and preview the stage counts; htmx gets only the preview, a plain form the page."""
    preview = _preview(conn, session, source)
    status = 400 if preview["error"] else 200
    if request.headers.get("hx-request"):
        workspace = get_workspace(conn, session.workspace_id)
        return page(
            request, session, "lifecycle_preview.html", status=status, workspace=workspace, preview=preview
        )
    return _editor(request, session, conn, source, preview=preview, status=status)


@router.post("/lifecycle/models", response_class=HTMLResponse)
def activate(
    request: Request,
    session: Editor,
    engine: EngineDep,
    conn: Conn,
    source: Annotated[str, Form(alias="yaml")] = "",
) -> Response:
    """Install the edited YAML as the model's next version and make it the workspace's model."""
    try:
        with engine.begin() as tx:
            installed = install_model(tx, session.workspace_id, source)
            record_action(tx, session.workspace_id, user_id=session.user.id, action="lifecycle.activate",
                          target=f"{installed['key']} v{installed['version']}")  # fmt: skip
    except LifeloopError as failure:
        preview: dict[str, Any] = {"error": failure.message, "model": None, "counts": {}, "current": {},
                                   "outside": 0}  # fmt: skip
        return _editor(request, session, fresh(conn), source, preview=preview, status=failure.status)
    return RedirectResponse("/lifecycle", status_code=303)


@router.post("/lifecycle/presets", response_class=HTMLResponse)
def install(
    request: Request,
    session: Editor,
    engine: EngineDep,
    conn: Conn,
    preset_key: Annotated[str, Form(alias="preset")] = "",
) -> Response:
    try:
        with engine.begin() as tx:
            installed = install_preset(tx, session.workspace_id, preset_key)
            record_action(tx, session.workspace_id, user_id=session.user.id, action="lifecycle.preset",
                          target=f"{installed['key']} v{installed['version']}",
                          detail={"preset": preset_key})  # fmt: skip
    except LifeloopError as failure:
        return _overview(request, session, fresh(conn), flash=failure.message, status=failure.status)
    return RedirectResponse("/lifecycle", status_code=303)


@router.post("/lifecycle/models/{key}/{version}/activate", response_class=HTMLResponse)
def reactivate(key: str, version: int, session: Editor, engine: EngineDep) -> Response:
    """Put an earlier version back: its YAML is installed again as the newest version."""
    with engine.begin() as tx:
        source = model_version(tx, session.workspace_id, key, version).source
        installed = install_model(tx, session.workspace_id, source)
        record_action(tx, session.workspace_id, user_id=session.user.id, action="lifecycle.activate",
                      target=f"{installed['key']} v{installed['version']}",
                      detail={"from_version": version})  # fmt: skip
    return RedirectResponse("/lifecycle", status_code=303)
