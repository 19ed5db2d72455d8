"""Ingest: de-duplicate by messageId and append to the event log in one transaction per request.

Identity resolution happens after the commit (``profiles.resolver``), so a 200 costs one insert.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine

from lifeloop.events import store as event_store
from lifeloop.events.messages import Message
from lifeloop.store.engine import transaction
from lifeloop.workspaces.models import SourceKey


@dataclass(frozen=True, slots=True)
class IngestResult:
    accepted: int  # stored now
    duplicates: int  # already stored (a retry) or repeated inside the request
    event_ids: list[int]  # of the stored events; empty when asked for without ids


def ingest_messages(
    conn: Connection, key: SourceKey, messages: Sequence[Message], *, with_ids: bool = True
) -> IngestResult:
    """Append ``messages`` for the key's workspace; call inside a transaction."""
    first: dict[str, Message] = {}
    for msg in messages:  # the first of a repeated messageId wins
        first.setdefault(msg.message_id, msg)
    unique = list(first.values())
    if not with_ids:
        accepted = event_store.append_events_counted(conn, key.workspace_id, key.source_id, unique)
        return IngestResult(accepted=accepted, duplicates=len(messages) - accepted, event_ids=[])
    stored = event_store.append_events(conn, key.workspace_id, key.source_id, unique)
    return IngestResult(accepted=len(stored), duplicates=len(messages) - len(stored), event_ids=stored)


def ingest(
    engine: Engine, key: SourceKey, messages: Sequence[Message], *, with_ids: bool = True
) -> IngestResult:
    """Store ``messages`` durably: when this returns, they are committed (not yet resolved).

    The tracking API passes ``with_ids=False``: it answers with counts only, which is cheaper.
    """
    return transaction(engine, lambda conn: ingest_messages(conn, key, messages, with_ids=with_ids))
