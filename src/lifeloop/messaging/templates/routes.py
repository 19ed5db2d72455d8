"""REST: /api/v1/templates — write Liquid templates per locale and preview them on a real profile."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from lifeloop.messaging.templates import service
from lifeloop.messaging.templates.models import Template
from lifeloop.web.deps import Conn, CurrentGrant, EngineDep, require_role

router = APIRouter(prefix="/api/v1/templates", tags=["templates"])
_WRITERS = ("admin", "operator")


class TemplateCreate(BaseModel):
    key: str = Field(min_length=1, max_length=100, examples=["welcome"])
    channel: str = Field(examples=["line"])
    default_locale: str = "en"
    variants: dict[str, dict[str, Any]] = Field(
        description='locale → fields, e.g. {"zh-TW": {"text": "{{ traits.name }} 您好"}}'
    )


class TemplateUpdate(BaseModel):
    variants: dict[str, dict[str, Any]] | None = None
    default_locale: str | None = None
    version: int | None = Field(default=None, description="The version you edited; a newer one is a 409.")


class TemplateOut(BaseModel):
    key: str
    channel: str
    default_locale: str
    variants: dict[str, dict[str, Any]]
    version: int
    created_at: datetime
    updated_at: datetime


class PreviewRequest(BaseModel):
    profile_id: int
    locale: str | None = Field(default=None, description="Defaults to the profile's locale.")
    event: dict[str, Any] = Field(
        default_factory=dict, description="Properties of a sample triggering event."
    )


class PreviewOut(BaseModel):
    key: str
    version: int
    locale: str
    content: dict[str, Any]


def _out(t: Template) -> TemplateOut:
    return TemplateOut(
        key=t.key,
        channel=t.channel,
        default_locale=t.default_locale,
        variants=t.variants,
        version=t.version,
        created_at=t.created_at,
        updated_at=t.updated_at,
    )


@router.get("", response_model=list[TemplateOut])
def list_templates(conn: Conn, grant: CurrentGrant, channel: str | None = None) -> list[TemplateOut]:
    return [_out(t) for t in service.list_templates(conn, grant.workspace_id, channel=channel)]


@router.post("", response_model=TemplateOut, status_code=201)
def create_template(body: TemplateCreate, engine: EngineDep, grant: CurrentGrant) -> TemplateOut:
    require_role(grant, *_WRITERS)
    with engine.begin() as conn:
        created = service.create_template(
            conn,
            grant.workspace_id,
            key=body.key,
            channel=body.channel,
            variants=body.variants,
            default_locale=body.default_locale,
        )
    return _out(created)


@router.get("/{key}", response_model=TemplateOut)
def get_template(key: str, conn: Conn, grant: CurrentGrant) -> TemplateOut:
    return _out(service.get_template(conn, grant.workspace_id, key))


@router.put("/{key}", response_model=TemplateOut)
def update_template(key: str, body: TemplateUpdate, engine: EngineDep, grant: CurrentGrant) -> TemplateOut:
    require_role(grant, *_WRITERS)
    with engine.begin() as conn:
        updated = service.update_template(
            conn,
            grant.workspace_id,
            key,
            variants=body.variants,
            default_locale=body.default_locale,
            expected_version=body.version,
        )
    return _out(updated)


@router.post("/{key}/preview", response_model=PreviewOut)
def preview_template(key: str, body: PreviewRequest, conn: Conn, grant: CurrentGrant) -> PreviewOut:
    """Render for a real profile; a template that would fail to send answers 400 with the reason."""
    rendered = service.preview(
        conn, grant.workspace_id, key, profile_id=body.profile_id, locale=body.locale, event=body.event
    )
    return PreviewOut(
        key=rendered.template_key, version=rendered.version, locale=rendered.locale, content=rendered.content
    )
