"""REST: /api/v1/channels — connect a channel (credentials go in, never come out)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from lifeloop.messaging.channels import config as service
from lifeloop.messaging.channels.models import ChannelConfig
from lifeloop.web.deps import Conn, CurrentGrant, EngineDep, require_role

router = APIRouter(prefix="/api/v1/channels", tags=["channels"])


class ChannelConfigUpdate(BaseModel):
    credentials: dict[str, Any] = Field(
        description="Secrets (tokens, app secrets, passwords); stored encrypted."
    )
    settings: dict[str, Any] = Field(
        default_factory=dict, description="Non-secret options (base_url, sender…)."
    )
    enabled: bool = True


class ChannelEnabled(BaseModel):
    enabled: bool


class ChannelConfigOut(BaseModel):
    id: int
    channel: str
    name: str
    settings: dict[str, Any]
    credential_fields: list[str] = Field(
        description="Which secrets are set; their values are never returned."
    )
    enabled: bool
    created_at: datetime
    updated_at: datetime


def _out(config: ChannelConfig) -> ChannelConfigOut:
    return ChannelConfigOut(
        id=config.id,
        channel=config.channel,
        name=config.name,
        settings=config.settings,
        credential_fields=config.credential_fields,
        enabled=config.enabled,
        created_at=config.created_at,
        updated_at=config.updated_at,
    )


@router.get("", response_model=list[ChannelConfigOut])
def list_channels(conn: Conn, grant: CurrentGrant, channel: str | None = None) -> list[ChannelConfigOut]:
    return [_out(c) for c in service.list_configs(conn, grant.workspace_id, channel=channel)]


@router.get("/{channel}/{name}", response_model=ChannelConfigOut)
def get_channel(channel: str, name: str, conn: Conn, grant: CurrentGrant) -> ChannelConfigOut:
    return _out(service.get_config(conn, grant.workspace_id, channel, name=name))


@router.put("/{channel}/{name}", response_model=ChannelConfigOut)
def save_channel(
    channel: str, name: str, body: ChannelConfigUpdate, engine: EngineDep, grant: CurrentGrant
) -> ChannelConfigOut:
    """Create or replace a channel configuration (admin only: it holds the brand's credentials)."""
    require_role(grant, "admin")
    with engine.begin() as conn:
        saved = service.save_config(
            conn,
            grant.workspace_id,
            channel=channel,
            name=name,
            credentials=body.credentials,
            settings=body.settings,
            enabled=body.enabled,
        )
    return _out(saved)


@router.patch("/{channel}/{name}", response_model=ChannelConfigOut)
def enable_channel(
    channel: str, name: str, body: ChannelEnabled, engine: EngineDep, grant: CurrentGrant
) -> ChannelConfigOut:
    require_role(grant, "admin", "operator")
    with engine.begin() as conn:
        service.set_enabled(conn, grant.workspace_id, channel, name, enabled=body.enabled)
        return _out(service.get_config(conn, grant.workspace_id, channel, name=name))
