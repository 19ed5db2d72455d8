"""Engagement facts: per-profile values the programme keeps outside the event log — ``points()``,
``tier()``, ``coupon_unused(…)``, ``checkin_streak()`` — read through providers it registers.

Why a registry rather than an import: ``conditions`` sits below lifecycle, audience and journeys, and
the engagement programme sits above them (its parts call audience and record events that journeys
react to), so ``conditions`` importing ``lifeloop.engagement`` would make a cycle. Instead
``lifeloop.engagement`` registers one ``FactProvider`` per function when it is imported
(``engagement/facts.py``), and every back end asks the provider:

- the evaluator (``StoredProfile``): the value for one profile (``values``);
- the SQL compiler: a correlated scalar subquery on the outer profile (``sql``), built with a
  connection so it can bake in what the workspace's settings say (its time zone, its tier ladder);
- the recheck schedules: when the value could change with no new event (a coupon or points lot
  expiring, a check-in streak breaking at local midnight), per profile (``next_change``) and for a
  range of profiles in SQL (``change_moments``).

A value's kind is fixed here (``ast.FACT_KINDS``); a provider answers None where the value is missing
(a tier without a programme), which compares false like any missing value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import ColumnElement, Connection, Select

from lifeloop.conditions.ast import FACT_KINDS, Fact
from lifeloop.errors import InvalidInput

# Correlates a subquery's profile id column with the outer profile (and names the workspace for the
# scoping guard): ``conditions.sql._Compiler.owned``.
Owned = Callable[[Any], list[ColumnElement[Any]]]


class FactProvider(Protocol):
    def values(
        self, conn: Connection, workspace_id: int, profile_ids: Sequence[int], fact: Fact, *, now: datetime
    ) -> dict[int, Any]:
        """The fact of each live profile at ``now`` (None where missing); every id asked is answered."""

    def sql(
        self, conn: Connection, workspace_id: int, fact: Fact, *, now: datetime, owned: Owned
    ) -> ColumnElement[Any]:
        """The same value as a scalar SQL expression over the outer ``profiles`` row (NULL where missing)."""

    def next_change(
        self, conn: Connection, workspace_id: int, profile_id: int, fact: Fact, *, now: datetime
    ) -> datetime | None:
        """The earliest moment after ``now`` the value could change with no new event, or None."""

    def change_moments(
        self, conn: Connection, workspace_id: int, fact: Fact, *, now: datetime, low: int, high: int
    ) -> Select[Any] | None:
        """``SELECT profile_id, at`` of ``next_change`` candidates for the profiles with an id in
        ``low..high`` (earlier is harmless, later is not), or None when time alone never changes it."""


_providers: dict[str, FactProvider] = {}


def register(name: str, provider: FactProvider) -> None:
    """Serve the condition function ``name()`` by ``provider`` (``lifeloop.engagement`` at import)."""
    if name not in FACT_KINDS:
        raise ValueError(f"no condition function {name}()")
    _providers[name] = provider


def provider(fact: Fact) -> FactProvider:
    found = _providers.get(fact.name)
    if found is None:  # only a process that never loaded the programme (lifeloop.engagement)
        raise InvalidInput(f"{fact.name}() needs the engagement programme, which is not loaded here")
    return found


def fact_value(conn: Connection, workspace_id: int, profile_id: int, fact: Fact, *, now: datetime) -> Any:
    return provider(fact).values(conn, workspace_id, [profile_id], fact, now=now).get(profile_id)
