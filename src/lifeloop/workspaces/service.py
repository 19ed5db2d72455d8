"""Create workspaces, sources and tokens; verify write keys and tokens."""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from zoneinfo import available_timezones

from sqlalchemy import Connection, Engine, insert, select, update

from lifeloop.errors import Conflict, InvalidInput, NotFound, Unauthorized
from lifeloop.store.schema import utcnow
from lifeloop.workspaces.models import (
    ROLES,
    ApiToken,
    Source,
    SourceKey,
    TokenGrant,
    Workspace,
    api_tokens,
    sources,
    workspaces,
)

_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _mint(prefix: str, nbytes: int) -> tuple[str, dict[str, str]]:
    """A new secret, and what is stored of it: its digest and a recognisable prefix."""
    secret = prefix + secrets.token_urlsafe(nbytes)
    return secret, {"hash": _digest(secret), "prefix": secret[:10]}


def create_workspace(
    conn: Connection, *, slug: str, name: str | None = None, timezone: str = "UTC"
) -> Workspace:
    """Create a workspace (one per brand). ``slug`` is lowercase letters, digits and dashes."""
    if not _SLUG.match(slug):
        raise InvalidInput(
            "slug must be 1-63 lowercase letters, digits or dashes, starting alphanumeric", field="slug"
        )
    if timezone not in available_timezones():
        raise InvalidInput(
            f"unknown time zone {timezone!r}; use an IANA name such as Asia/Taipei", field="timezone"
        )
    if conn.execute(select(workspaces.c.id).where(workspaces.c.slug == slug)).first():
        raise Conflict(f"workspace {slug!r} already exists", field="slug")
    row = conn.execute(
        insert(workspaces)
        .values(slug=slug, name=name or slug, timezone=timezone, created_at=utcnow())
        .returning(*workspaces.c)
    ).one()
    return Workspace(**row._mapping)


def workspace_id_of(engine: Engine, slug_or_id: str | int) -> int:
    """The id of a workspace named by slug or id, read on a connection of its own (CLI, webhooks)."""
    from lifeloop.store.engine import connect

    with connect(engine) as conn:
        return get_workspace(conn, slug_or_id).id


def get_workspace(conn: Connection, slug_or_id: str | int) -> Workspace:
    column = (
        workspaces.c.id if isinstance(slug_or_id, int) or str(slug_or_id).isdigit() else workspaces.c.slug
    )
    value = int(slug_or_id) if column is workspaces.c.id else slug_or_id
    row = conn.execute(select(workspaces).where(column == value)).first()
    if row is None:
        raise NotFound(f"no workspace {slug_or_id!r}")
    return Workspace(**row._mapping)


def list_workspaces(conn: Connection) -> list[Workspace]:
    return [Workspace(**r._mapping) for r in conn.execute(select(workspaces).order_by(workspaces.c.id))]


def create_source(conn: Connection, workspace_id: int, *, name: str) -> tuple[Source, str]:
    """Create an ingest source; returns it with its write key, which is stored only as a digest."""
    if not name.strip():
        raise InvalidInput("source name must not be empty", field="name")
    exists = conn.execute(
        select(sources.c.id).where(sources.c.workspace_id == workspace_id, sources.c.name == name)
    ).first()
    if exists:
        raise Conflict(f"source {name!r} already exists in this workspace", field="name")
    key, stored = _mint("wk_", 24)
    row = conn.execute(
        insert(sources)
        .values(
            workspace_id=workspace_id,
            name=name,
            write_key_hash=stored["hash"],
            write_key_prefix=stored["prefix"],
            created_at=utcnow(),
        )
        .returning(*[c for c in sources.c if c.name != "write_key_hash"])
    ).one()
    return Source(**row._mapping), key


def list_sources(conn: Connection, workspace_id: int) -> list[Source]:
    columns = [c for c in sources.c if c.name != "write_key_hash"]
    rows = conn.execute(select(*columns).where(sources.c.workspace_id == workspace_id).order_by(sources.c.id))
    return [Source(**r._mapping) for r in rows]


def disable_source(conn: Connection, workspace_id: int, source_id: int) -> None:
    result = conn.execute(
        update(sources)
        .where(sources.c.workspace_id == workspace_id, sources.c.id == source_id)
        .values(disabled_at=utcnow())
    )
    if result.rowcount == 0:
        raise NotFound(f"no source {source_id} in this workspace")


class WriteKeyCache:
    """Verified write keys, trusted for ``ttl`` seconds so ingest skips a lookup per request."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, SourceKey]] = {}
        self._lock = threading.Lock()

    def get(self, digest: str) -> SourceKey | None:
        with self._lock:
            entry = self._entries.get(digest)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, digest: str, key: SourceKey) -> None:
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[digest] = (time.monotonic() + self.ttl, key)


def cached_write_key(write_key: str | None, cache: WriteKeyCache) -> SourceKey | None:
    """The source of a recently verified write key, without touching the database."""
    return cache.get(_digest(write_key)) if write_key else None


def verify_write_key(
    conn: Connection, write_key: str | None, cache: WriteKeyCache | None = None
) -> SourceKey:
    """The source a write key belongs to; Unauthorized when it is missing, unknown or disabled."""
    if not write_key:
        raise Unauthorized(
            "missing write key: send it as the HTTP Basic username or as writeKey in the body",
            field="writeKey",
        )
    digest = _digest(write_key)
    if cache is not None and (hit := cache.get(digest)) is not None:
        return hit
    row = conn.execute(
        select(sources.c.id, sources.c.workspace_id, sources.c.disabled_at)
        .where(sources.c.write_key_hash == digest)
        .execution_options(cross_workspace=True)  # the key is what tells us the workspace
    ).first()
    if row is None or row.disabled_at is not None:
        raise Unauthorized("invalid write key", field="writeKey")
    key = SourceKey(workspace_id=row.workspace_id, source_id=row.id)
    if cache is not None:
        cache.put(digest, key)
    return key


def create_api_token(
    conn: Connection, workspace_id: int, *, name: str, role: str = "admin"
) -> tuple[ApiToken, str]:
    """Create an API token for the REST API; returns it with the secret, shown once."""
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}", field="role")
    secret, stored = _mint("llt_", 30)
    row = conn.execute(
        insert(api_tokens)
        .values(
            workspace_id=workspace_id,
            name=name,
            role=role,
            token_hash=stored["hash"],
            token_prefix=stored["prefix"],
            created_at=utcnow(),
        )
        .returning(*[c for c in api_tokens.c if c.name != "token_hash"])
    ).one()
    return ApiToken(**row._mapping), secret


def verify_api_token(conn: Connection, secret: str | None) -> TokenGrant:
    if not secret:
        raise Unauthorized("missing API token: send 'Authorization: Bearer <token>'")
    row = conn.execute(
        select(api_tokens.c.id, api_tokens.c.workspace_id, api_tokens.c.role, api_tokens.c.revoked_at)
        .where(api_tokens.c.token_hash == _digest(secret))
        .execution_options(cross_workspace=True)  # the token is what tells us the workspace
    ).first()
    if row is None or row.revoked_at is not None:
        raise Unauthorized("invalid or revoked API token")
    return TokenGrant(workspace_id=row.workspace_id, token_id=row.id, role=row.role)


def list_api_tokens(conn: Connection, workspace_id: int) -> list[ApiToken]:
    """The workspace's tokens, newest first (never their secrets: only a digest is kept)."""
    rows = conn.execute(
        select(*[c for c in api_tokens.c if c.name != "token_hash"])
        .where(api_tokens.c.workspace_id == workspace_id)
        .order_by(api_tokens.c.created_at.desc(), api_tokens.c.id.desc())
    )
    return [ApiToken(**row._mapping) for row in rows]


def revoke_api_token(conn: Connection, workspace_id: int, token_id: int) -> None:
    """Revoke a token at once; revoking a revoked token changes nothing."""
    found = conn.execute(
        select(api_tokens.c.revoked_at).where(
            api_tokens.c.workspace_id == workspace_id, api_tokens.c.id == token_id
        )
    ).first()
    if found is None:
        raise NotFound(f"no API token {token_id} in this workspace")
    if found.revoked_at is None:
        conn.execute(
            update(api_tokens)
            .where(api_tokens.c.workspace_id == workspace_id, api_tokens.c.id == token_id)
            .values(revoked_at=utcnow())
        )
