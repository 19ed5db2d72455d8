"""Identity resolution for a batch of messages: which profile each belongs to, merges, new identities.

The batch is resolved in memory first (one read of the identities it mentions), then written with a
handful of bulk statements, so ingest costs a few queries per batch rather than per event.

Rules (as Segment and PostHog users expect):
- a message with both userId and anonymousId links them; an anonymous profile merges into the
  identified one, but two profiles identified by *different* userIds never merge implicitly
  (a shared device);
- ``alias`` is an explicit request and merges even two identified profiles (previousId → userId);
- channel identities (e-mail, phone, LINE, WeCom, WeChat) attach to the message's profile, or merge
  the profile that holds them under the same rule as anonymousId.
A merged profile keeps its row (``merged_into``); its events and identities move to the survivor
and the merge is recorded in ``profile_merges``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from lifeloop.audience import service as audience
from lifeloop.events import store as event_store
from lifeloop.events.messages import Message
from lifeloop.lifecycle import service as lifecycle
from lifeloop.profiles import computed
from lifeloop.profiles.models import identities, profile_merges, profiles
from lifeloop.store.engine import RetryTransaction

Key = tuple[str, str]


@dataclass(slots=True)
class _Merge:
    winner: int
    loser: int
    reason: str
    message_id: str


@dataclass
class IdentityGraph:
    """The batch's view of who is who; temporary (negative) ids stand for profiles not yet created."""

    owner: dict[Key, int]
    user_id: dict[int, str | None]
    parent: dict[int, int] = field(default_factory=dict)
    new_keys: dict[Key, int] = field(default_factory=dict)
    new_profiles: list[int] = field(default_factory=list)
    merges: list[_Merge] = field(default_factory=list)

    def find(self, pid: int) -> int:
        while pid in self.parent:
            pid = self.parent[pid]
        return pid

    def owner_of(self, key: Key) -> int | None:
        pid = self.owner.get(key)
        return None if pid is None else self.find(pid)

    def _new_profile(self, user_id: str | None) -> int:
        temp = -(len(self.new_profiles) + 1)
        self.new_profiles.append(temp)
        self.user_id[temp] = user_id
        return temp

    def _link(self, key: Key, pid: int) -> None:
        if self.owner_of(key) is None:
            self.owner[key] = pid
            self.new_keys[key] = pid

    def _set_user_id(self, pid: int, user_id: str) -> None:
        if self.user_id.get(pid) is None:
            self.user_id[pid] = user_id

    def _merge(self, a: int, b: int, reason: str, message_id: str, *, force: bool = False) -> int | None:
        """Merge two profiles; ``a`` wins ties. Returns the survivor, or None when the rule forbids it."""
        a, b = self.find(a), self.find(b)
        if a == b:
            return a
        ua, ub = self.user_id.get(a), self.user_id.get(b)
        if not force and ua is not None and ub is not None and ua != ub:
            return None
        # Survivor: an existing profile over a new one, then an identified one, then ``a``.
        if (a < 0 < b) or (not force and ua is None and ub is not None and (a > 0) == (b > 0)):
            a, b = b, a
        self.parent[b] = a
        if self.user_id.get(a) is None and self.user_id.get(b) is not None:
            self._set_user_id(a, self.user_id[b])  # type: ignore[arg-type]
        if b > 0:
            self.merges.append(_Merge(winner=a, loser=b, reason=reason, message_id=message_id))
        return a

    def assign(self, msg: Message) -> int:
        """The profile ``msg`` belongs to, linking and merging identities as it says."""
        uid, anon = msg.user_id, msg.anonymous_id
        pid: int | None
        if msg.type == "alias":
            pid = self._assign_alias(msg)
        else:
            pid = self.owner_of(("user_id", uid)) if uid else None
            if anon:
                anon_pid = self.owner_of(("anonymous_id", anon))
                if anon_pid is not None and pid is None:
                    if uid is None or self.user_id.get(anon_pid) in (None, uid):
                        pid = anon_pid
                elif anon_pid is not None and pid is not None and anon_pid != pid:
                    pid = self._merge(pid, anon_pid, "identify", msg.message_id) or pid
            if pid is None:
                for key in msg.external_ids:
                    holder = self.owner_of(key)
                    if holder is not None and (uid is None or self.user_id.get(holder) in (None, uid)):
                        pid = holder
                        break
            if pid is None:
                pid = self._new_profile(uid)
            if uid:
                self._set_user_id(pid, uid)
                self._link(("user_id", uid), pid)
            if anon:
                self._link(("anonymous_id", anon), pid)
        for key in msg.external_ids:
            holder = self.owner_of(key)
            if holder is None:
                self._link(key, pid)
            elif holder != pid:
                pid = self._merge(pid, holder, f"identity:{key[0]}", msg.message_id) or pid
        return self.find(pid)

    def _assign_alias(self, msg: Message) -> int:
        uid, previous = msg.user_id, msg.previous_id
        assert uid is not None and previous is not None
        prev_pid = self.owner_of(("user_id", previous)) or self.owner_of(("anonymous_id", previous))
        user_pid = self.owner_of(("user_id", uid))
        if user_pid is None and prev_pid is None:
            pid = self._new_profile(uid)
            self._link(("anonymous_id", previous), pid)
        elif user_pid is None:
            assert prev_pid is not None
            pid = prev_pid
        elif prev_pid is None:
            pid = user_pid
            self._link(("anonymous_id", previous), pid)
        else:
            pid = self._merge(user_pid, prev_pid, "alias", msg.message_id, force=True)  # type: ignore[assignment]
        self._set_user_id(pid, uid)
        self._link(("user_id", uid), pid)
        return pid


def _message_keys(msg: Message) -> list[Key]:
    keys: list[Key] = list(msg.external_ids)
    if msg.user_id:
        keys.append(("user_id", msg.user_id))
    if msg.anonymous_id:
        keys.append(("anonymous_id", msg.anonymous_id))
    if msg.previous_id:
        keys += [("user_id", msg.previous_id), ("anonymous_id", msg.previous_id)]
    return keys


def load_graph(conn: Connection, workspace_id: int, messages: Sequence[Message]) -> IdentityGraph:
    by_kind: dict[str, list[str]] = {}
    for kind, value in dict.fromkeys(k for m in messages for k in _message_keys(m)):
        by_kind.setdefault(kind, []).append(value)
    owner: dict[Key, int] = {}
    # One IN list per kind: both databases then walk the (workspace, kind, value) key directly.
    for kind, values in by_kind.items():
        for start in range(0, len(values), 900):
            rows = conn.execute(
                select(identities.c.value, identities.c.profile_id).where(
                    identities.c.workspace_id == workspace_id,
                    identities.c.kind == kind,
                    identities.c.value.in_(values[start : start + 900]),
                )
            )
            owner.update({(kind, r.value): r.profile_id for r in rows})
    user_ids: dict[int, str | None] = {}
    profile_ids = sorted(set(owner.values()))
    if profile_ids:
        rows = conn.execute(
            select(profiles.c.id, profiles.c.user_id).where(
                profiles.c.workspace_id == workspace_id, profiles.c.id.in_(profile_ids)
            )
        )
        user_ids = {r.id: r.user_id for r in rows}
    return IdentityGraph(owner=owner, user_id=user_ids)


@dataclass(slots=True)
class _ProfileState:
    traits: dict[str, Any]
    first_seen: datetime
    last_seen: datetime
    timezone: str | None
    locale: str | None
    user_id: str | None
    changed: bool = False


_PROFILE_STATE_COLUMNS = ("traits", "first_seen", "last_seen", "timezone", "locale", "user_id")


def _lock_profiles(conn: Connection, workspace_id: int, ids: Sequence[int]) -> dict[int, _ProfileState]:
    """Load and lock existing profiles; a profile merged away meanwhile means our read is stale."""
    if not ids:
        return {}
    query = (
        select(profiles.c.id, profiles.c.merged_into, *(profiles.c[c] for c in _PROFILE_STATE_COLUMNS))
        .where(profiles.c.workspace_id == workspace_id, profiles.c.id.in_(sorted(ids)))
        .order_by(profiles.c.id)
        .with_for_update()
    )
    states: dict[int, _ProfileState] = {}
    for row in conn.execute(query):
        if row.merged_into is not None:
            raise RetryTransaction(f"profile {row.id} was merged while this batch was resolved")
        states[row.id] = _ProfileState(**{c: getattr(row, c) for c in _PROFILE_STATE_COLUMNS})
    if len(states) != len(set(ids)):
        raise RetryTransaction("a profile vanished while this batch was resolved")
    return states


def _apply_message(state: _ProfileState, msg: Message) -> None:
    if msg.timestamp < state.first_seen:
        state.first_seen, state.changed = msg.timestamp, True
    if msg.timestamp > state.last_seen:
        state.last_seen, state.changed = msg.timestamp, True
    if msg.type == "identify" and msg.traits:
        merged = {**state.traits, **msg.traits}
        if merged != state.traits:
            state.traits, state.changed = merged, True
    context = msg.context or {}
    for attr, key in (("timezone", "timezone"), ("locale", "locale")):
        value = context.get(key)
        if isinstance(value, str) and value and len(value) <= 64 and getattr(state, attr) != value:
            setattr(state, attr, value)
            state.changed = True


def _absorb(winner: _ProfileState, loser: _ProfileState) -> None:
    winner.traits = {**loser.traits, **winner.traits}
    winner.first_seen = min(winner.first_seen, loser.first_seen)
    winner.last_seen = max(winner.last_seen, loser.last_seen)
    winner.timezone = winner.timezone or loser.timezone
    winner.locale = winner.locale or loser.locale
    winner.user_id = winner.user_id or loser.user_id
    winner.changed = True


def resolve_and_place(
    conn: Connection, workspace_id: int, messages: Sequence[Message], event_ids: Sequence[int], now: datetime
) -> list[tuple[int, int]]:
    """Resolve identities for stored events, write profiles, identities and merges, place the events.

    ``messages`` are the events ``event_ids`` in arrival order. Returns (event id, profile id) pairs.
    Must run inside a transaction (see ``store.transaction``).
    """
    graph = load_graph(conn, workspace_id, messages)
    assigned = [graph.assign(m) for m in messages]

    final = [graph.find(p) for p in assigned]
    existing_ids = {p for p in final if p > 0}
    for merge in graph.merges:
        existing_ids.update((graph.find(merge.winner), merge.loser))
    states = _lock_profiles(conn, workspace_id, sorted(existing_ids))

    # A new profile starts from one of its messages; _apply_message widens first/last seen.
    new_ids = [t for t in graph.new_profiles if graph.find(t) == t]
    for msg, pid in zip(messages, final, strict=True):
        if pid < 0 and pid not in states:
            states[pid] = _ProfileState(
                traits={},
                first_seen=msg.timestamp,
                last_seen=msg.timestamp,
                timezone=None,
                locale=None,
                user_id=None,
            )
    for merge in graph.merges:
        _absorb(states[graph.find(merge.winner)], states[merge.loser])
    for pid, state in states.items():
        if state.user_id is None and graph.user_id.get(pid) is not None:
            state.user_id, state.changed = graph.user_id[pid], True
    for msg, pid in zip(messages, final, strict=True):
        _apply_message(states[pid], msg)

    real: dict[int, int] = {}
    if new_ids:
        rows = conn.execute(
            insert(profiles).returning(profiles.c.id, sort_by_parameter_order=True),
            [_profile_row(workspace_id, states[t], now) for t in new_ids],
        )
        real = dict(zip(new_ids, (r.id for r in rows), strict=True))

    def real_id(pid: int) -> int:
        pid = graph.find(pid)
        return real.get(pid, pid)

    if graph.new_keys:
        try:
            conn.execute(
                insert(identities),
                [
                    {
                        "workspace_id": workspace_id,
                        "kind": k,
                        "value": v,
                        "profile_id": real_id(p),
                        "created_at": now,
                    }
                    for (k, v), p in graph.new_keys.items()
                ],
            )
        except IntegrityError as error:  # another writer linked the same identity first
            raise RetryTransaction("identity linked concurrently") from error

    for merge in graph.merges:
        _store_merge(conn, workspace_id, winner=real_id(merge.winner), merge=merge, now=now)

    changed = {
        pid: state for pid, state in states.items() if pid > 0 and state.changed and graph.find(pid) == pid
    }
    _update_profiles(conn, workspace_id, changed, now)

    placements = [(event_id, real_id(pid)) for event_id, pid in zip(event_ids, final, strict=True)]
    event_store.place_events(conn, workspace_id, placements)
    return placements


_PG_UPDATE_PROFILES = (
    "UPDATE profiles SET user_id = u.user_id, traits = u.traits, first_seen = u.first_seen, "
    "last_seen = u.last_seen, timezone = u.timezone, locale = u.locale, updated_at = %s "
    "FROM unnest(%s::bigint[], %s::text[], %s::jsonb[], %s::timestamptz[], %s::timestamptz[], "
    "%s::text[], %s::text[]) AS u(id, user_id, traits, first_seen, last_seen, timezone, locale) "
    "WHERE profiles.workspace_id = %s AND profiles.id = u.id"
)


def _update_profiles(
    conn: Connection, workspace_id: int, changed: dict[int, _ProfileState], now: datetime
) -> None:
    if not changed:
        return
    if conn.dialect.name == "postgresql":
        # One statement: an executemany of per-row UPDATEs cost more than the rest of the batch.
        states = list(changed.values())
        conn.exec_driver_sql(
            _PG_UPDATE_PROFILES,
            (
                now,
                list(changed),
                [s.user_id for s in states],
                [orjson.dumps(s.traits).decode() for s in states],
                [s.first_seen for s in states],
                [s.last_seen for s in states],
                [s.timezone for s in states],
                [s.locale for s in states],
                workspace_id,
            ),
        )
        return
    conn.execute(
        update(profiles)
        .where(profiles.c.workspace_id == workspace_id, profiles.c.id == bindparam("b_id"))
        .values({**{c: bindparam(f"b_{c}") for c in _PROFILE_STATE_COLUMNS}, "updated_at": now}),
        [
            {"b_id": pid, **{f"b_{c}": getattr(state, c) for c in _PROFILE_STATE_COLUMNS}}
            for pid, state in changed.items()
        ],
    )


def _profile_row(workspace_id: int, state: _ProfileState, now: datetime) -> dict[str, Any]:
    return {
        "workspace_id": workspace_id,
        **{c: getattr(state, c) for c in _PROFILE_STATE_COLUMNS},
        "created_at": now,
        "updated_at": now,
    }


def _store_merge(conn: Connection, workspace_id: int, *, winner: int, merge: _Merge, now: datetime) -> None:
    loser = merge.loser
    # Identities first: concurrent writers resolving through them now wait for this transaction.
    conn.execute(
        update(identities)
        .where(identities.c.workspace_id == workspace_id, identities.c.profile_id == loser)
        .values(profile_id=winner)
    )
    conn.execute(
        update(profiles)
        .where(
            profiles.c.workspace_id == workspace_id,
            (profiles.c.id == loser) | (profiles.c.merged_into == loser),
        )
        .values(merged_into=winner, updated_at=now)
    )
    moved = event_store.move_events(conn, workspace_id, from_profile=loser, to_profile=winner)
    computed.merge_profiles(conn, workspace_id, loser=loser, winner=winner)
    lifecycle.forget_profile(conn, workspace_id, loser)  # the winner is re-evaluated with its batch
    audience.merge_profiles(conn, workspace_id, loser=loser, winner=winner)
    conn.execute(
        insert(profile_merges).values(
            workspace_id=workspace_id,
            winner_id=winner,
            loser_id=loser,
            reason=merge.reason,
            message_id=merge.message_id,
            events_moved=moved,
            merged_at=now,
        )
    )
