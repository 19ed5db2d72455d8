"""Channel name → adapter factory, and building a workspace's adapter from its stored configuration.

A factory takes one dict: the decrypted credentials merged with the settings, plus ``workspace_id``
and ``name``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection

from lifeloop.errors import InvalidInput
from lifeloop.messaging.channels.base import ChannelAdapter
from lifeloop.messaging.channels.config import load_config
from lifeloop.messaging.channels.email import EmailAdapter
from lifeloop.messaging.channels.line import LineAdapter
from lifeloop.messaging.channels.sms import SmsAdapter
from lifeloop.messaging.channels.webhook import from_config as webhook_from_config
from lifeloop.messaging.channels.wechat import WeChatAdapter
from lifeloop.messaging.channels.wecom import WeComAdapter

AdapterFactory = Callable[[dict[str, Any]], ChannelAdapter]

ADAPTERS: dict[str, AdapterFactory] = {
    "line": LineAdapter,
    "wecom": WeComAdapter,
    "wechat": WeChatAdapter,
    "email": EmailAdapter,
    "sms": SmsAdapter,
    "webhook": webhook_from_config,
}


def adapter_config(
    workspace_id: int, name: str, settings: dict[str, Any], credentials: dict[str, Any]
) -> dict[str, Any]:
    return {**settings, **credentials, "workspace_id": workspace_id, "name": name}


def build_adapter(
    conn: Connection, workspace_id: int, channel: str, *, name: str | None = None
) -> ChannelAdapter:
    """The adapter for a workspace's channel (its default configuration unless ``name`` is given)."""
    factory = ADAPTERS.get(channel)
    if factory is None:
        raise InvalidInput(
            f"no adapter for channel {channel!r}; known: {', '.join(sorted(ADAPTERS))}", field="channel"
        )
    config, credentials = load_config(conn, workspace_id, channel, name=name)
    try:
        return factory(adapter_config(workspace_id, config.name, config.settings, credentials))
    except (ValueError, KeyError) as error:
        raise InvalidInput(
            f"{channel} channel {config.name!r} is misconfigured: {error}", field="settings"
        ) from None
