"""Message templates: the list, and a Liquid editor (one textarea per locale and field, as the template
stores them) with a live preview rendered for a real customer by the same functions as the REST preview.

Liquid syntax and render errors are shown beside the field they are in, with the line, and answer 400
(htmx swaps that answer too, see ``msg_template_edit.html``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Connection

from lifeloop.accounts.service import record_action
from lifeloop.errors import InvalidInput, LifeloopError
from lifeloop.messaging.channels.models import CHANNELS
from lifeloop.messaging.templates import service
from lifeloop.messaging.templates.models import Template
from lifeloop.profiles.service import find_by_identity, list_profiles, resolve_profile_id
from lifeloop.web.console.auth import Editor, Reader
from lifeloop.web.console.i18n import translations
from lifeloop.web.console.pages.data import fresh
from lifeloop.web.console.render import page
from lifeloop.web.deps import Conn, EngineDep
from lifeloop.workspaces.service import get_workspace

router = APIRouter(include_in_schema=False)

# The fields a new template of each channel starts with (docs/channels.md, "Content" of each adapter);
# a stored template shows the fields it has.
CHANNEL_FIELDS: dict[str, tuple[str, ...]] = {
    "line": ("text",),
    "wecom": ("text",),
    "wechat": ("template_id", "url", "data"),
    "email": ("subject", "html", "text"),
    "sms": ("text",),
    "webhook": ("text",),
}
JSON_FIELDS = frozenset({"data", "flex", "messages", "attachments", "miniprogram"})  # structures, not text
NEW_LOCALES = ("zh-TW", "zh-CN", "en")


@dataclass
class FieldBox:
    """One textarea of the editor."""

    name: str
    value: str
    is_json: bool
    error: str = ""


@dataclass
class VariantBox:
    """The textareas of one locale."""

    locale: str
    fields: list[FieldBox] = field(default_factory=list)


@dataclass
class Spot:
    """Where a template error is: which locale and field, which line of it."""

    locale: str | None
    field: str | None
    line: int | None


def _boxes(template_fields: tuple[str, ...], variants: dict[str, dict[str, Any]]) -> list[VariantBox]:
    boxes = []
    for locale, fields in variants.items():
        names = list(fields) + [f for f in template_fields if f not in fields]
        box = VariantBox(locale)
        for name in names:
            value = fields.get(name, "")
            is_json = not isinstance(value, str) or (name in JSON_FIELDS and name not in fields)
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=2)
            box.fields.append(FieldBox(name, text, is_json))
        boxes.append(box)
    return boxes


def _new_boxes(channel: str) -> list[VariantBox]:
    fields = CHANNEL_FIELDS.get(channel, ("text",))
    return [VariantBox(loc, [FieldBox(f, "", f in JSON_FIELDS) for f in fields]) for loc in NEW_LOCALES]


def _form_boxes(form: Any, channel: str) -> list[VariantBox]:
    """The editor's textareas as submitted (``f:<locale>:<field>`` text, ``j:…`` JSON, ``x:<field>`` for
    the extra locale), blanks kept so a re-shown form has every textarea."""
    by_locale: dict[str, VariantBox] = {}
    for key, value in form.multi_items():
        kind, _, rest = str(key).partition(":")
        if kind not in ("f", "j") or ":" not in rest:
            continue
        locale, _, name = rest.partition(":")
        box = by_locale.setdefault(locale, VariantBox(locale))
        box.fields.append(FieldBox(name, str(value), kind == "j"))
    extra = str(form.get("extra_locale") or "").strip()
    if extra:
        box = by_locale.setdefault(extra, VariantBox(extra))
        for name in CHANNEL_FIELDS.get(channel, ("text",)):
            value = str(form.get(f"x:{name}") or "")
            if not any(f.name == name for f in box.fields):
                box.fields.append(FieldBox(name, value, name in JSON_FIELDS))
    return list(by_locale.values())


def _variants(boxes: list[VariantBox]) -> dict[str, dict[str, Any]]:
    """The template's variants from the textareas: blank fields and wholly blank locales left out."""
    variants: dict[str, dict[str, Any]] = {}
    for box in boxes:
        fields: dict[str, Any] = {}
        for f in box.fields:
            if not f.value.strip():
                continue
            if f.is_json:
                try:
                    fields[f.name] = json.loads(f.value)
                except json.JSONDecodeError as error:
                    raise InvalidInput(
                        f"{box.locale}.{f.name} is not valid JSON: {error.msg} (line {error.lineno})",
                        field=f"variants.{box.locale}.{f.name}",
                    ) from None
            else:
                fields[f.name] = f.value
        if fields:
            variants[box.locale] = fields
    return variants


def error_spot(error: LifeloopError) -> Spot:
    """Which textarea an error belongs to: syntax and JSON errors name ``variants.<locale>.<field>``, a
    render error its locale and field."""
    locale = getattr(error, "locale", None)
    line = getattr(error, "line", None)
    name = error.field
    if name and name.startswith("variants."):
        _, _, rest = name.partition(".")
        loc, _, name = rest.partition(".")
        locale = locale or loc
    return Spot(locale, name or None, line if isinstance(line, int) else None)


def _mark(boxes: list[VariantBox], error: LifeloopError, locale: str) -> bool:
    """Put the error under the textarea it belongs to (with its line); False when it names none."""
    spot = error_spot(error)
    where = translations(locale).gettext("line %(line)s") % {"line": spot.line} if spot.line else ""
    for box in boxes:
        for f in box.fields:
            if box.locale == spot.locale and f.name == spot.field:
                f.error = error.message + (f" ({where})" if where else "")
                return True
    return False


def find_customer(conn: Connection, workspace_id: int, text: str) -> int:
    """A profile id from what an operator types: a number is a profile id, ``kind:value`` an identity
    (``email:ann@example.com``), anything else a user id."""
    text = text.strip()
    if not text:
        raise InvalidInput("choose a customer: a profile id, kind:value or a user id", field="customer")
    if text.isdigit():
        return resolve_profile_id(conn, workspace_id, int(text))
    kind, sep, value = text.partition(":")
    if sep and value and kind.isidentifier():
        return find_by_identity(conn, workspace_id, kind, value)
    return find_by_identity(conn, workspace_id, "user_id", text)


def customer_choices(conn: Connection, workspace_id: int) -> list[dict[str, Any]]:
    """Some customers to pick from (the first by id), for the editor's datalist."""
    return [
        {
            "id": p["id"],
            "label": " · ".join(str(v) for v in (p["user_id"], (p["traits"] or {}).get("name")) if v),
        }
        for p in list_profiles(conn, workspace_id, limit=50)
    ]


def _editor(
    request: Request,
    session: Reader,
    conn: Connection,
    *,
    template: Template | None,
    key: str,
    channel: str,
    default_locale: str,
    boxes: list[VariantBox],
    version: int | None,
    flash: str = "",
    error: bool = False,
    status: int = 200,
) -> HTMLResponse:
    fresh(conn)
    return page(
        request,
        session,
        "msg_template_edit.html",
        status=status,
        workspace=get_workspace(conn, session.workspace_id),
        tpl=template,
        key=key,
        channel=channel,
        channels=CHANNELS,
        default_locale=default_locale,
        boxes=boxes,
        version=version,
        extra_fields=[(f, f in JSON_FIELDS) for f in CHANNEL_FIELDS.get(channel, ("text",))],
        customers=customer_choices(conn, session.workspace_id),
        flash=flash,
        flash_kind="error" if error else "",
    )


@router.get("/templates", response_class=HTMLResponse)
def template_list(request: Request, session: Reader, conn: Conn, channel: str = "") -> HTMLResponse:
    return page(
        request,
        session,
        "msg_templates.html",
        workspace=get_workspace(conn, session.workspace_id),
        templates=service.list_templates(conn, session.workspace_id, channel=channel or None),
        channels=CHANNELS,
        channel=channel,
    )


@router.get("/templates/new", response_class=HTMLResponse)
def new_template(request: Request, session: Editor, conn: Conn, channel: str = "line") -> HTMLResponse:
    channel = channel if channel in CHANNELS else "line"
    return _editor(
        request, session, conn, template=None, key="", channel=channel, default_locale="zh-TW",
        boxes=_new_boxes(channel), version=None,
    )  # fmt: skip


@router.post("/templates/new", response_class=HTMLResponse)
async def create(request: Request, session: Editor, engine: EngineDep, conn: Conn) -> Response:
    form = await request.form()
    key = str(form.get("key") or "").strip()
    channel = str(form.get("channel") or "")
    default_locale = str(form.get("default_locale") or "").strip()
    boxes = _form_boxes(form, channel)
    try:
        variants = _variants(boxes)
        with engine.begin() as tx:
            created = service.create_template(
                tx, session.workspace_id, key=key, channel=channel, variants=variants,
                default_locale=default_locale,
            )  # fmt: skip
            detail = {"channel": channel, "locales": sorted(variants)}
            record_action(tx, session.workspace_id, user_id=session.user.id, action="template.create",
                          target=created.key, detail=detail)  # fmt: skip
    except LifeloopError as failure:
        _mark(boxes, failure, session.user.locale)
        return _editor(
            request, session, conn, template=None, key=key, channel=channel, default_locale=default_locale,
            boxes=boxes, version=None, flash=failure.message, error=True, status=failure.status,
        )  # fmt: skip
    return RedirectResponse(f"/templates/{created.key}?saved=1", status_code=303)


@router.post("/templates/_preview", response_class=HTMLResponse)
async def live_preview(request: Request, session: Reader, conn: Conn) -> HTMLResponse:
    """The editor's live preview: what is typed now, rendered for the chosen customer (not saved).

    Registered before ``/templates/{key}``; no template key can start with ``_``."""
    form = await request.form()
    channel = str(form.get("channel") or "")
    customer = str(form.get("customer") or "").strip()
    gettext = translations(session.user.locale).gettext
    context: dict[str, Any] = {
        "rendered": None, "error": "", "spot": None, "profile_id": None, "variant_locale": ""
    }  # fmt: skip
    status = 200
    if customer:
        try:
            raw_event = str(form.get("event") or "").strip()
            event = json.loads(raw_event) if raw_event else {}
            if not isinstance(event, dict):
                raise InvalidInput("the sample event must be a JSON object", field="event")
            profile_id = find_customer(conn, session.workspace_id, customer)
            rendered = service.preview_draft(
                conn, session.workspace_id, channel=channel, variants=_variants(_form_boxes(form, channel)),
                default_locale=str(form.get("default_locale") or "en"), profile_id=profile_id,
                locale=str(form.get("preview_locale") or "").strip() or None, event=event,
            )  # fmt: skip
            context.update(
                rendered=_shown(rendered.content), variant_locale=rendered.locale, profile_id=profile_id
            )
        except json.JSONDecodeError as failure:
            context["error"] = gettext("The sample event is not valid JSON: %(reason)s") % {
                "reason": failure.msg
            }
            status = 400
        except LifeloopError as failure:
            context.update(error=failure.message, spot=error_spot(failure))
            status = failure.status
    return page(request, session, "msg_template_preview.html", status=status, **context)


@router.get("/templates/{key}", response_class=HTMLResponse)
def edit_template(request: Request, key: str, session: Reader, conn: Conn, saved: int = 0) -> HTMLResponse:
    template = service.get_template(conn, session.workspace_id, key)
    gettext = translations(session.user.locale).gettext
    return _editor(
        request, session, conn, template=template, key=template.key, channel=template.channel,
        default_locale=template.default_locale,
        boxes=_boxes(CHANNEL_FIELDS.get(template.channel, ()), template.variants),
        version=template.version, flash=gettext("Template saved.") if saved else "",
    )  # fmt: skip


@router.post("/templates/{key}", response_class=HTMLResponse)
async def save_template(
    request: Request, key: str, session: Editor, engine: EngineDep, conn: Conn
) -> Response:
    current = service.get_template(conn, session.workspace_id, key)  # 404 for another workspace's key
    form = await request.form()
    default_locale = str(form.get("default_locale") or "").strip()
    raw_version = str(form.get("version") or "")
    boxes = _form_boxes(form, current.channel)
    try:
        variants = _variants(boxes)
        with engine.begin() as tx:
            updated = service.update_template(
                tx, session.workspace_id, key, variants=variants, default_locale=default_locale or None,
                expected_version=int(raw_version) if raw_version.isdigit() else None,
            )  # fmt: skip
            detail = {"version": updated.version, "locales": sorted(variants)}
            record_action(tx, session.workspace_id, user_id=session.user.id, action="template.update",
                          target=key, detail=detail)  # fmt: skip
    except LifeloopError as failure:
        _mark(boxes, failure, session.user.locale)
        return _editor(
            request, session, conn, template=current, key=key, channel=current.channel,
            default_locale=default_locale, boxes=boxes, version=current.version, flash=failure.message,
            error=True, status=failure.status,
        )  # fmt: skip
    return RedirectResponse(f"/templates/{key}?saved=1", status_code=303)


def _shown(content: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """Each rendered field as text: (name, text, is the e-mail HTML to show in a sandboxed frame)."""
    return [
        (name, value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=2),
         name == "html")
        for name, value in content.items()
    ]  # fmt: skip
