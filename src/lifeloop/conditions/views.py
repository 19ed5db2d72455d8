"""Two ``ProfileView``s: one reading a stored profile (O(that profile's rows)), one over plain data.

``StoredProfile`` serves counts and sums from the daily buckets of ``profiles.computed``: whole days
after the window's first day come from buckets, and the window's first (partial) day from the raw
events of that day, through the ``(workspace_id, profile_id, timestamp)`` index. ``where=`` filters
read the profile's raw events in the window. ``MemoryProfile`` computes the same from a list of
events; tests use it as the reference.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from lifeloop.audience.models import profile_tags, segment_members, segments
from lifeloop.conditions.ast import SEEN_TIMES, Fact, Interaction, Selector
from lifeloop.conditions.evaluator import MISSING, EventFilter, iso_week, lookup
from lifeloop.conditions.facts import fact_value
from lifeloop.events.models import events
from lifeloop.lifecycle.models import profile_stages
from lifeloop.profiles.computed import (
    ResolvedEvent,
    computed_event_days,
    computed_event_sums,
    computed_event_times,
    day_start,
    epoch_day,
    event_name,
    is_interaction_name,
    numeric_properties,
)
from lifeloop.profiles.models import profiles


def matches(selector: Selector | None, name: str) -> bool:
    """Whether events called ``name`` are selected (None selects every event)."""
    if selector is None:
        return True
    if isinstance(selector, Interaction):
        return is_interaction_name(name)
    return name == selector


def _amount(properties: Mapping[str, Any] | None, prop: str) -> float:
    return sum(v for k, v in numeric_properties(properties) if k == prop)


def _tag_holds(expires_at: datetime | None, now: datetime) -> bool:
    return expires_at is None or expires_at > now


@dataclass
class MemoryProfile:
    """A profile given as plain data: the reference the stored and SQL back ends must agree with."""

    now: datetime
    events: Sequence[ResolvedEvent] = ()
    traits: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, datetime | None] = field(default_factory=dict)
    stages: Mapping[str, str] = field(default_factory=dict)
    segments: frozenset[str] = frozenset()
    # Engagement facts by call (``Fact("points")``, ``Fact("coupon_unused", "day7")``); one not given
    # reads as a customer without any: 0, or missing for ``tier()``.
    facts: Mapping[Fact, Any] = field(default_factory=dict)

    def _named(self) -> Iterable[tuple[str, ResolvedEvent]]:
        return ((event_name(e.type, e.event), e) for e in self.events)

    def _selected(self, selector: Selector, since: datetime | None, where: EventFilter | None) -> list[Any]:
        return [
            e
            for name, e in self._named()
            if matches(selector, name)
            and (since is None or e.timestamp > since)
            and (where is None or where(e.properties))
        ]

    def trait(self, path: tuple[str, ...]) -> Any:
        return lookup(self.traits, path)

    def seen(self, which: str) -> datetime | None:
        edge, selector = SEEN_TIMES[which]
        return self._time(edge, selector)

    def event_time(self, which: str, selector: Selector) -> datetime | None:
        return self._time(which, selector)

    def _time(self, edge: str, selector: Selector | None) -> datetime | None:
        times = [e.timestamp for name, e in self._named() if matches(selector, name)]
        if not times:
            return None
        return min(times) if edge == "first" else max(times)

    def count(self, selector: Selector, since: datetime | None, where: EventFilter | None) -> int:
        return len(self._selected(selector, since, where))

    def total(
        self, selector: Selector, prop: str, since: datetime | None, where: EventFilter | None
    ) -> float:
        return sum((_amount(e.properties, prop) for e in self._selected(selector, since, where)), 0.0)

    def active_days(self, since: datetime | None) -> int:
        return len({epoch_day(e.timestamp) for e in self._selected(Interaction(), since, None)})

    def active_weeks(self, weeks: int) -> int:
        this_week = iso_week(epoch_day(self.now))
        seen = {iso_week(epoch_day(e.timestamp)) for e in self._selected(Interaction(), None, None)}
        return len({w for w in seen if this_week - weeks < w <= this_week})

    def has_tag(self, tag: str) -> bool:
        return tag in self.tags and _tag_holds(self.tags[tag], self.now)

    def in_stage(self, model: str | None, stage: str) -> bool:
        if model is None:
            return stage in self.stages.values()
        return self.stages.get(model) == stage

    def in_segment(self, key: str) -> bool:
        return key in self.segments

    def fact(self, fact: Fact) -> Any:
        value = self.facts.get(fact, None if fact.name == "tier" else 0)
        return MISSING if value is None else value


class StoredProfile:
    """One stored profile, read lazily: each kind of row is loaded once, by the profile's index."""

    def __init__(self, conn: Connection, workspace_id: int, profile_id: int, *, now: datetime):
        self.conn, self.workspace_id, self.profile_id, self._now = conn, workspace_id, profile_id, now
        self._cache: dict[Any, Any] = {}

    @property
    def now(self) -> datetime:
        return self._now

    def _once(self, key: Any, load: Any) -> Any:
        if key not in self._cache:
            self._cache[key] = load()
        return self._cache[key]

    def _rows(self, table: Any, *columns: str, **equal: Any) -> list[Any]:
        query = select(*(table.c[c] for c in columns)).where(
            table.c.workspace_id == self.workspace_id,
            table.c.profile_id == self.profile_id,
            *(table.c[k] == v for k, v in equal.items()),
        )
        return list(self.conn.execute(query))

    def _days(self) -> list[Any]:
        return self._once("days", lambda: self._rows(computed_event_days, "event", "day", "event_count"))

    def _sums(self, prop: str) -> list[Any]:
        return self._once(
            ("sums", prop), lambda: self._rows(computed_event_sums, "event", "day", "total", property=prop)
        )

    def _times(self) -> list[Any]:
        return self._once("times", lambda: self._rows(computed_event_times, "event", "first_at", "last_at"))

    def _raw(self, since: datetime | None, until: datetime | None) -> list[tuple[str, datetime, Any]]:
        query = select(events.c.type, events.c.event, events.c.timestamp, events.c.properties).where(
            events.c.workspace_id == self.workspace_id, events.c.profile_id == self.profile_id
        )
        if since is not None:
            query = query.where(events.c.timestamp > since)
        if until is not None:
            query = query.where(events.c.timestamp < until)
        return [(event_name(r.type, r.event), r.timestamp, r.properties) for r in self.conn.execute(query)]

    def trait(self, path: tuple[str, ...]) -> Any:
        traits = self._once(
            "traits",
            lambda: self.conn.execute(
                select(profiles.c.traits).where(
                    profiles.c.workspace_id == self.workspace_id, profiles.c.id == self.profile_id
                )
            ).scalar(),
        )
        return lookup(traits, path)

    def seen(self, which: str) -> datetime | None:
        edge, selector = SEEN_TIMES[which]
        return self._time(edge, selector)

    def event_time(self, which: str, selector: Selector) -> datetime | None:
        return self._time(which, selector)

    def _time(self, edge: str, selector: Selector | None) -> datetime | None:
        rows = [r for r in self._times() if matches(selector, r.event)]
        if not rows:
            return None
        return min(r.first_at for r in rows) if edge == "first" else max(r.last_at for r in rows)

    def _window(
        self,
        selector: Selector,
        since: datetime | None,
        where: EventFilter | None,
        buckets: list[Any],
        raw: Any,
    ) -> float:
        """Whole days from ``buckets`` (day, amount) plus the partial first day from raw events."""
        if where is not None:
            return sum(
                raw(p) for name, _, p in self._raw(since, None) if matches(selector, name) and where(p)
            )
        first_day = None if since is None else epoch_day(since)
        total = sum(
            amount
            for name, day, amount in buckets
            if matches(selector, name) and (first_day is None or day > first_day)
        )
        if first_day is not None:
            edge = self._raw(since, day_start(first_day + 1))
            total += sum(raw(p) for name, _, p in edge if matches(selector, name))
        return total

    def count(self, selector: Selector, since: datetime | None, where: EventFilter | None) -> int:
        buckets = [(r.event, r.day, r.event_count) for r in self._days()]
        return int(self._window(selector, since, where, buckets, lambda _p: 1))

    def total(
        self, selector: Selector, prop: str, since: datetime | None, where: EventFilter | None
    ) -> float:
        buckets = [(r.event, r.day, r.total) for r in self._sums(prop)]
        return float(self._window(selector, since, where, buckets, lambda p: _amount(p, prop)))

    def active_days(self, since: datetime | None) -> int:
        first_day = None if since is None else epoch_day(since)
        days = {
            r.day
            for r in self._days()
            if is_interaction_name(r.event) and (first_day is None or r.day > first_day)
        }
        if first_day is not None:
            edge = self._raw(since, day_start(first_day + 1))
            if any(is_interaction_name(name) for name, _, _ in edge):
                days.add(first_day)
        return len(days)

    def active_weeks(self, weeks: int) -> int:
        this_week = iso_week(epoch_day(self._now))
        seen = {iso_week(r.day) for r in self._days() if is_interaction_name(r.event)}
        return len({w for w in seen if this_week - weeks < w <= this_week})

    def has_tag(self, tag: str) -> bool:
        tags = self._once(
            "tags", lambda: {r.tag: r.expires_at for r in self._rows(profile_tags, "tag", "expires_at")}
        )
        return tag in tags and _tag_holds(tags[tag], self._now)

    def in_stage(self, model: str | None, stage: str) -> bool:
        stages = self._once(
            "stages", lambda: {r.model: r.stage for r in self._rows(profile_stages, "model", "stage")}
        )
        return stage in stages.values() if model is None else stages.get(model) == stage

    def in_segment(self, key: str) -> bool:
        keys = self._once("segments", self._segment_keys)
        return key in keys

    def fact(self, fact: Fact) -> Any:
        value = self._once(
            ("fact", fact),
            lambda: fact_value(self.conn, self.workspace_id, self.profile_id, fact, now=self._now),
        )
        return MISSING if value is None else value

    def _segment_keys(self) -> set[str]:
        query = (
            select(segments.c.key)
            .select_from(
                segment_members.join(
                    segments,
                    (segments.c.workspace_id == segment_members.c.workspace_id)
                    & (segments.c.id == segment_members.c.segment_id),
                )
            )
            .where(
                segment_members.c.workspace_id == self.workspace_id,
                segment_members.c.profile_id == self.profile_id,
            )
        )
        return set(self.conn.execute(query).scalars())
