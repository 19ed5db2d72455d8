"""Channel configurations per workspace, with credentials encrypted at rest.

Credentials (access tokens, app secrets, SMTP passwords) are stored as AES-256-GCM ciphertext under a
key derived from the deployment's secret key (``lifeloop.secret_key``). The row's workspace, channel and
name are the associated data, so a ciphertext copied to another row (or another workspace) fails to
decrypt instead of silently handing over a brand's credentials.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Connection, insert, select, update

from lifeloop.errors import Conflict, InvalidInput, LifeloopError, NotFound
from lifeloop.messaging.channels.models import CHANNELS, ChannelConfig, channel_configs
from lifeloop.secret_key import SECRET_KEY_ENV, secret_key
from lifeloop.secret_key import MissingSecretKey as MissingSecretKey  # where callers have imported it
from lifeloop.store.schema import utcnow

_VERSION = "v1"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class CredentialsUnreadable(LifeloopError):
    code = "credentials_unreadable"


def derive_key(purpose: str) -> bytes:
    """A 32-byte key for one purpose (HKDF-SHA256), so no two uses share key material."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"lifeloop", info=purpose.encode())
    return hkdf.derive(secret_key())


def _aad(workspace_id: int, channel: str, name: str) -> bytes:
    return f"{workspace_id}\x00{channel}\x00{name}".encode()


def encrypt_credentials(credentials: dict[str, Any], *, workspace_id: int, channel: str, name: str) -> str:
    nonce = secrets.token_bytes(12)
    sealed = AESGCM(derive_key("channel-credentials")).encrypt(
        nonce, orjson.dumps(credentials), _aad(workspace_id, channel, name)
    )
    return f"{_VERSION}:" + base64.urlsafe_b64encode(nonce + sealed).decode()


def decrypt_credentials(token: str, *, workspace_id: int, channel: str, name: str) -> dict[str, Any]:
    version, _, payload = token.partition(":")
    if version != _VERSION:
        raise CredentialsUnreadable(f"channel credentials are in an unknown format ({version!r})")
    raw = base64.urlsafe_b64decode(payload)
    try:
        plain = AESGCM(derive_key("channel-credentials")).decrypt(
            raw[:12], raw[12:], _aad(workspace_id, channel, name)
        )
    except InvalidTag:
        raise CredentialsUnreadable(
            f"credentials of {channel} channel {name!r} cannot be decrypted: "
            f"{SECRET_KEY_ENV} (or the embedded store's key file) changed, or the row was tampered with; "
            "save the credentials again"
        ) from None
    value = orjson.loads(plain)
    assert isinstance(value, dict)
    return value


def _check(channel: str, name: str, credentials: Any, settings: Any) -> None:
    if channel not in CHANNELS:
        raise InvalidInput(f"channel must be one of {', '.join(CHANNELS)}", field="channel")
    if not _NAME.match(name):
        raise InvalidInput("name must be 1-100 letters, digits, dots, dashes or underscores", field="name")
    if not isinstance(credentials, dict) or not all(isinstance(k, str) for k in credentials):
        raise InvalidInput("credentials must be a JSON object", field="credentials")
    if not isinstance(settings, dict):
        raise InvalidInput("settings must be a JSON object", field="settings")


def _record(row: Any, credentials: dict[str, Any]) -> ChannelConfig:
    return ChannelConfig(
        id=row.id,
        workspace_id=row.workspace_id,
        channel=row.channel,
        name=row.name,
        settings=row.settings or {},
        credential_fields=sorted(credentials),
        enabled=row.enabled,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def save_config(
    conn: Connection,
    workspace_id: int,
    *,
    channel: str,
    name: str = "default",
    credentials: dict[str, Any],
    settings: dict[str, Any] | None = None,
    enabled: bool = True,
) -> ChannelConfig:
    """Create or replace a channel configuration (an upsert on workspace, channel and name)."""
    settings = settings if settings is not None else {}
    _check(channel, name, credentials, settings)
    sealed = encrypt_credentials(credentials, workspace_id=workspace_id, channel=channel, name=name)
    now = utcnow()
    where = (
        channel_configs.c.workspace_id == workspace_id,
        channel_configs.c.channel == channel,
        channel_configs.c.name == name,
    )
    if conn.execute(select(channel_configs.c.id).where(*where)).first():
        row = conn.execute(
            update(channel_configs)
            .where(*where)
            .values(credentials=sealed, settings=settings, enabled=enabled, updated_at=now)
            .returning(*channel_configs.c)
        ).one()
    else:
        row = conn.execute(
            insert(channel_configs)
            .values(
                workspace_id=workspace_id,
                channel=channel,
                name=name,
                credentials=sealed,
                settings=settings,
                enabled=enabled,
                created_at=now,
                updated_at=now,
            )
            .returning(*channel_configs.c)
        ).one()
    return _record(row, credentials)


def save_config_keeping_secrets(
    conn: Connection,
    workspace_id: int,
    *,
    channel: str,
    name: str = "default",
    credentials: dict[str, Any],
    settings: dict[str, Any] | None = None,
    enabled: bool = True,
) -> ChannelConfig:
    """``save_config``, where credential fields not given keep their stored values.

    A form never shows secrets back, so an operator changing one token (or only the settings) leaves the
    other fields empty; those mean "unchanged", not "delete".
    """
    stored: dict[str, Any] = {}
    if channel in CHANNELS and _NAME.match(name):
        try:
            _, stored = load_config(conn, workspace_id, channel, name=name, require_enabled=False)
        except (NotFound, CredentialsUnreadable):  # unreadable: the admin is saving them again
            stored = {}
    given = {k: v for k, v in credentials.items() if v not in (None, "")}
    return save_config(
        conn,
        workspace_id,
        channel=channel,
        name=name,
        credentials={**stored, **given},
        settings=settings,
        enabled=enabled,
    )


def _row(conn: Connection, workspace_id: int, channel: str, name: str | None) -> Any:
    query = select(channel_configs).where(
        channel_configs.c.workspace_id == workspace_id, channel_configs.c.channel == channel
    )
    if name is not None:
        query = query.where(channel_configs.c.name == name)
    else:  # the oldest enabled configuration is the channel's default
        query = query.where(channel_configs.c.enabled.is_(True)).order_by(channel_configs.c.id).limit(1)
    row = conn.execute(query).first()
    if row is None:
        which = f" {name!r}" if name else ""
        raise NotFound(f"no {channel} channel{which} is configured in this workspace", field="channel")
    return row


def get_config(
    conn: Connection, workspace_id: int, channel: str, *, name: str | None = None
) -> ChannelConfig:
    """A configuration without its secrets (the names of the credential fields only)."""
    row = _row(conn, workspace_id, channel, name)
    creds = decrypt_credentials(row.credentials, workspace_id=workspace_id, channel=channel, name=row.name)
    return _record(row, creds)


def load_config(
    conn: Connection,
    workspace_id: int,
    channel: str,
    *,
    name: str | None = None,
    require_enabled: bool = True,
) -> tuple[ChannelConfig, dict[str, Any]]:
    """A configuration with its decrypted credentials, for building an adapter or checking a signature."""
    row = _row(conn, workspace_id, channel, name)
    if require_enabled and not row.enabled:
        raise Conflict(f"{channel} channel {row.name!r} is disabled", field="channel")
    creds = decrypt_credentials(row.credentials, workspace_id=workspace_id, channel=channel, name=row.name)
    return _record(row, creds), creds


def list_configs(conn: Connection, workspace_id: int, *, channel: str | None = None) -> list[ChannelConfig]:
    query = select(channel_configs).where(channel_configs.c.workspace_id == workspace_id)
    if channel is not None:
        query = query.where(channel_configs.c.channel == channel)
    rows = conn.execute(query.order_by(channel_configs.c.channel, channel_configs.c.id)).all()
    return [
        _record(
            r, decrypt_credentials(r.credentials, workspace_id=workspace_id, channel=r.channel, name=r.name)
        )
        for r in rows
    ]


def set_enabled(conn: Connection, workspace_id: int, channel: str, name: str, *, enabled: bool) -> None:
    result = conn.execute(
        update(channel_configs)
        .where(
            channel_configs.c.workspace_id == workspace_id,
            channel_configs.c.channel == channel,
            channel_configs.c.name == name,
        )
        .values(enabled=enabled, updated_at=utcnow())
    )
    if result.rowcount == 0:
        raise NotFound(f"no {channel} channel {name!r} in this workspace", field="name")


def fingerprint(value: str) -> str:
    """A short, non-reversible tag of a secret, for cache keys and logs."""
    return hashlib.sha256(value.encode()).hexdigest()[:16]
