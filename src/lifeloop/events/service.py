"""Ingest: de-duplicate by messageId, resolve identities, store, all in one transaction per request."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine

from lifeloop.events import store as event_store
from lifeloop.events.messages import Message
from lifeloop.profiles.identity import resolve_and_store
from lifeloop.store.engine import transaction
from lifeloop.store.schema import utcnow
from lifeloop.workspaces.models import SourceKey


@dataclass(frozen=True, slots=True)
class IngestResult:
    accepted: int  # stored now
    duplicates: int  # already stored (a retry) or repeated inside the request
    event_ids: list[int]


def ingest_messages(conn: Connection, key: SourceKey, messages: Sequence[Message]) -> IngestResult:
    """Store ``messages`` for the key's workspace; call inside a transaction."""
    unique: list[Message] = []
    ids: set[str] = set()
    for msg in messages:  # the first of a repeated messageId wins
        if msg.message_id not in ids:
            ids.add(msg.message_id)
            unique.append(msg)
    seen = event_store.existing_message_ids(conn, key.workspace_id, [m.message_id for m in unique])
    fresh = [m for m in unique if m.message_id not in seen]
    stored = resolve_and_store(conn, key.workspace_id, key.source_id, fresh, utcnow()) if fresh else []
    return IngestResult(accepted=len(stored), duplicates=len(messages) - len(stored), event_ids=stored)


def ingest(engine: Engine, key: SourceKey, messages: Sequence[Message]) -> IngestResult:
    """Store ``messages`` durably: when this returns, they are committed."""
    return transaction(
        engine, lambda conn: ingest_messages(conn, key, messages), serialize_retries_on=key.workspace_id
    )
