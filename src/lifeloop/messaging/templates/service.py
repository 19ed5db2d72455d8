"""Message templates: create, update (a new version each time), read, render for a profile, preview."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from lifeloop.errors import Conflict, InvalidInput, NotFound
from lifeloop.messaging.channels.models import CHANNELS
from lifeloop.messaging.templates.models import Template, templates
from lifeloop.messaging.templates.render import (
    TemplateRenderError,
    check_source,
    choose_variant,
    normalise_locale,
    render_variant,
)
from lifeloop.profiles.service import Profile, get_profile
from lifeloop.store.schema import utcnow
from lifeloop.workspaces.models import Workspace
from lifeloop.workspaces.service import get_workspace

_KEY = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")
_LOCALE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
MAX_VARIANT_BYTES = 64 * 1024

__all__ = [
    "Rendered",
    "TemplateRenderError",
    "context_of",
    "create_template",
    "get_template",
    "list_templates",
    "preview",
    "preview_draft",
    "profile_context",
    "render_template",
    "update_template",
]


@dataclass(frozen=True, slots=True)
class Rendered:
    """What a send step hands to the outbox: the content for the adapter and where it came from."""

    template_key: str
    version: int
    locale: str
    content: dict[str, Any]


def _variants(variants: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(variants, dict) or not variants:
        raise InvalidInput(
            "variants must be an object of locale → fields, with at least one", field="variants"
        )
    clean: dict[str, dict[str, Any]] = {}
    for locale, fields in variants.items():
        norm = normalise_locale(str(locale))
        if not _LOCALE.match(norm):
            raise InvalidInput(
                f"{locale!r} is not a locale such as zh-TW, zh-CN, en, ja, th", field="variants"
            )
        if norm in clean:
            raise InvalidInput(f"locale {norm} is given twice", field=f"variants.{locale}")
        if not isinstance(fields, dict) or not fields:
            raise InvalidInput(f"variants.{locale} must be an object of fields", field=f"variants.{locale}")
        if len(repr(fields).encode()) > MAX_VARIANT_BYTES:
            raise InvalidInput(f"variants.{locale} is over 64 KB", field=f"variants.{locale}")
        for field, source in fields.items():
            check_source(source, locale=norm, field=str(field))
        clean[norm] = fields
    return clean


def _record(row: Any) -> Template:
    return Template(**row._mapping)


def create_template(
    conn: Connection,
    workspace_id: int,
    *,
    key: str,
    channel: str,
    variants: dict[str, dict[str, Any]],
    default_locale: str = "en",
) -> Template:
    """Create a template; every variant is parsed now, so a syntax error is refused before any send."""
    if not _KEY.match(key):
        raise InvalidInput(
            "key must be 1-100 lowercase letters, digits, dots, dashes or underscores", field="key"
        )
    if channel not in CHANNELS:
        raise InvalidInput(f"channel must be one of {', '.join(CHANNELS)}", field="channel")
    clean = _variants(variants)
    default = normalise_locale(default_locale)
    if default not in clean:
        raise InvalidInput(f"default_locale {default} has no variant", field="default_locale")
    exists = conn.execute(
        select(templates.c.id).where(templates.c.workspace_id == workspace_id, templates.c.key == key)
    ).first()
    if exists:
        raise Conflict(f"template {key!r} already exists", field="key")
    now = utcnow()
    row = conn.execute(
        insert(templates)
        .values(
            workspace_id=workspace_id,
            key=key,
            channel=channel,
            default_locale=default,
            variants=clean,
            version=1,
            created_at=now,
            updated_at=now,
        )
        .returning(*templates.c)
    ).one()
    return _record(row)


def get_template(conn: Connection, workspace_id: int, key: str) -> Template:
    row = conn.execute(
        select(templates).where(templates.c.workspace_id == workspace_id, templates.c.key == key)
    ).first()
    if row is None:
        raise NotFound(f"no template {key!r} in this workspace", field="key")
    return _record(row)


def list_templates(conn: Connection, workspace_id: int, *, channel: str | None = None) -> list[Template]:
    query = select(templates).where(templates.c.workspace_id == workspace_id)
    if channel is not None:
        query = query.where(templates.c.channel == channel)
    return [_record(r) for r in conn.execute(query.order_by(templates.c.key))]


def update_template(
    conn: Connection,
    workspace_id: int,
    key: str,
    *,
    variants: dict[str, dict[str, Any]] | None = None,
    default_locale: str | None = None,
    expected_version: int | None = None,
) -> Template:
    """Replace variants and/or the default locale; the version goes up by one.

    ``expected_version`` makes the update conditional (two operators editing at once: the second
    gets a Conflict instead of silently overwriting the first).
    """
    current = get_template(conn, workspace_id, key)
    if expected_version is not None and expected_version != current.version:
        raise Conflict(
            f"template {key!r} is at version {current.version}, not {expected_version}; reload and retry",
            field="version",
        )
    clean = _variants(variants) if variants is not None else current.variants
    default = normalise_locale(default_locale) if default_locale else current.default_locale
    if default not in clean:
        raise InvalidInput(f"default_locale {default} has no variant", field="default_locale")
    row = conn.execute(
        update(templates)
        .where(
            templates.c.workspace_id == workspace_id,
            templates.c.key == key,
            templates.c.version == current.version,  # lost-update guard under concurrency
        )
        .values(variants=clean, default_locale=default, version=current.version + 1, updated_at=utcnow())
        .returning(*templates.c)
    ).first()
    if row is None:
        raise Conflict(f"template {key!r} changed while it was being updated; retry", field="version")
    return _record(row)


def render_template(template: Template, context: Mapping[str, Any], *, locale: str | None = None) -> Rendered:
    """Render the variant best matching ``locale``; raises TemplateRenderError, never returns a partial."""
    chosen = choose_variant(template.variants, locale, template.default_locale)
    content = render_variant(template.variants[chosen], context, locale=chosen)
    return Rendered(template_key=template.key, version=template.version, locale=chosen, content=content)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def profile_context(
    conn: Connection,
    workspace_id: int,
    profile_id: int,
    *,
    event: Mapping[str, Any] | None = None,
    computed: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], str | None]:
    """The render context for one profile, and the profile's preferred locale.

    ``profile`` (id, user_id, traits, locale, timezone), ``traits``, ``computed`` (the profile's
    activity summary plus whatever the caller computed), ``event`` (the triggering event's
    properties) and ``workspace`` (slug, name, timezone).
    """
    profile = get_profile(conn, workspace_id, profile_id)
    workspace = get_workspace(conn, workspace_id)
    return context_of(profile, workspace, event=event, computed=computed)


def locale_of(profile: Profile) -> str | None:
    """The locale a profile prefers: its own, else the ``locale`` trait."""
    trait = profile.traits.get("locale")
    return profile.locale or (trait if isinstance(trait, str) else None)


def context_of(
    profile: Profile,
    workspace: Workspace,
    *,
    event: Mapping[str, Any] | None = None,
    computed: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], str | None]:
    """``profile_context`` of a profile and workspace already read (batch senders read them in bulk)."""
    now = utcnow()
    summary = {
        "first_seen": _iso(profile.first_seen),
        "last_seen": _iso(profile.last_seen),
        "days_since_last_seen": (now - profile.last_seen).days,
        "days_since_first_seen": (now - profile.first_seen).days,
        "event_count": profile.event_count,
    }
    traits = dict(profile.traits)
    locale = locale_of(profile)
    context = {
        "profile": {
            "id": profile.id,
            "user_id": profile.user_id,
            "traits": traits,
            "locale": locale,
            "timezone": profile.timezone,
        },
        "traits": traits,
        "computed": {**summary, **(computed or {})},
        "event": dict(event or {}),
        "workspace": {"slug": workspace.slug, "name": workspace.name, "timezone": workspace.timezone},
    }
    return context, locale


def preview(
    conn: Connection,
    workspace_id: int,
    key: str,
    *,
    profile_id: int,
    locale: str | None = None,
    event: Mapping[str, Any] | None = None,
) -> Rendered:
    """Render a stored template for a real profile, as it would be sent (TemplateRenderError if not)."""
    template = get_template(conn, workspace_id, key)
    context, preferred = profile_context(conn, workspace_id, profile_id, event=event)
    return render_template(template, context, locale=locale or preferred)


def preview_draft(
    conn: Connection,
    workspace_id: int,
    *,
    channel: str,
    variants: dict[str, dict[str, Any]],
    default_locale: str,
    profile_id: int,
    locale: str | None = None,
    event: Mapping[str, Any] | None = None,
) -> Rendered:
    """Render variants not saved yet for a real profile, exactly as ``preview`` renders a stored one.

    The console's editor previews while the operator types: the variants are checked as a save checks
    them (a syntax error is an ``InvalidInput`` naming the field) and rendered with the same context.
    """
    if channel not in CHANNELS:
        raise InvalidInput(f"channel must be one of {', '.join(CHANNELS)}", field="channel")
    clean = _variants(variants)
    default = normalise_locale(default_locale)
    if default not in clean:
        default = next(iter(clean))
    now = utcnow()
    draft = Template(
        id=0,
        workspace_id=workspace_id,
        key="draft",
        channel=channel,
        default_locale=default,
        variants=clean,
        version=0,
        created_at=now,
        updated_at=now,
    )
    context, preferred = profile_context(conn, workspace_id, profile_id, event=event)
    return render_template(draft, context, locale=locale or preferred)
