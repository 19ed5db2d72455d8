"""Playbooks: the seed articles' journeys, shipped with their templates (and segments), installed in one call.

Each ``*.yaml`` beside this file is a journey definition (``lifeloop.journeys.definition``) with two more
lists: ``templates`` (key, channel, variants in zh-CN and en, optional ``default_locale``) and ``segments``
(key, name, condition, optional description) the journey needs. ``install_playbook`` creates what the
workspace lacks — templates and segments already there (by key) are kept as they are, so an operator's
edited copy survives — and saves the journey as a draft tagged with the playbook, publishing it if asked.
Installing twice changes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Connection

from lifeloop.errors import Conflict, InvalidInput, NotFound
from lifeloop.journeys import definition as d
from lifeloop.journeys import service
from lifeloop.store.schema import utcnow

PLAYBOOKS_DIR = Path(__file__).parent
LOCALES = ("zh-CN", "en")
_SEGMENT_KEY = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
_EXTRA = ("templates", "segments")


@dataclass(frozen=True, slots=True)
class PlaybookTemplate:
    key: str
    channel: str
    variants: dict[str, dict[str, Any]]
    default_locale: str = "zh-CN"


@dataclass(frozen=True, slots=True)
class PlaybookSegment:
    key: str
    name: str
    condition: str
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Playbook:
    key: str
    definition: d.Definition
    source: dict[str, Any]  # the journey definition as written (without templates and segments)
    templates: list[PlaybookTemplate] = field(default_factory=list)
    segments: list[PlaybookSegment] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": dict(self.definition.name),
            "description": dict(self.definition.description),
            "trigger": self.definition.trigger.kind,
            "templates": [t.key for t in self.templates],
            "segments": [s.key for s in self.segments],
        }


def playbook_keys() -> list[str]:
    return sorted(path.stem for path in PLAYBOOKS_DIR.glob("*.yaml"))


def _problem(key: str, message: str, where: str = "playbook") -> InvalidInput:
    return InvalidInput(f"playbook {key!r}: {message}", field=where)


def _templates(key: str, items: Any) -> list[PlaybookTemplate]:
    from lifeloop.messaging.channels.models import CHANNELS
    from lifeloop.messaging.templates.render import check_source

    if not isinstance(items, list):
        raise _problem(key, "templates is a list of {key, channel, variants}", "templates")
    found: list[PlaybookTemplate] = []
    for index, item in enumerate(items):
        where = f"templates[{index}]"
        if not isinstance(item, dict) or set(item) - {"key", "channel", "variants", "default_locale"}:
            raise _problem(key, f"{where} takes key, channel, variants and default_locale", where)
        variants = item.get("variants")
        if item.get("channel") not in CHANNELS:
            raise _problem(key, f"{where}.channel must be one of {', '.join(CHANNELS)}", where)
        if not isinstance(variants, dict) or any(not isinstance(variants.get(loc), dict) for loc in LOCALES):
            raise _problem(key, f"{where}.variants needs zh-CN and en", f"{where}.variants")
        for locale, fields in variants.items():
            for name, text in fields.items():
                check_source(text, locale=str(locale), field=str(name))
        template = PlaybookTemplate(
            str(item.get("key")), str(item["channel"]), variants, str(item.get("default_locale", "zh-CN"))
        )
        if template.default_locale not in variants:
            raise _problem(key, f"{where}.default_locale has no variant", where)
        found.append(template)
    keys = [t.key for t in found]
    if len(set(keys)) != len(keys):
        raise _problem(key, "a template key is used twice", "templates")
    return found


def _segments(key: str, items: Any) -> list[PlaybookSegment]:
    from lifeloop.conditions import ConditionSyntaxError, parse

    if not isinstance(items, list):
        raise _problem(key, "segments is a list of {key, name, condition}", "segments")
    found: list[PlaybookSegment] = []
    for index, item in enumerate(items):
        where = f"segments[{index}]"
        if not isinstance(item, dict) or set(item) - {"key", "name", "condition", "description"}:
            raise _problem(key, f"{where} takes key, name, condition and description", where)
        if not _SEGMENT_KEY.match(str(item.get("key"))):
            raise _problem(key, f"{where}.key must be lowercase letters, digits, _ or -", where)
        try:
            parse(str(item.get("condition")))
        except ConditionSyntaxError as error:
            raise _problem(key, f"{where}.condition: {error.message}", f"{where}.condition") from None
        found.append(
            PlaybookSegment(
                str(item["key"]), str(item.get("name") or item["key"]), str(item["condition"]),
                item.get("description"),
            )
        )  # fmt: skip
    return found


def load_playbook(key: str, text: str) -> Playbook:
    """A playbook from its YAML; InvalidInput names what is wrong (a step, a template, a segment)."""
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise _problem(key, "a playbook is a journey definition with templates and segments")
    source = {k: v for k, v in data.items() if k not in _EXTRA}
    try:
        defn = d.load_definition(source)
    except InvalidInput as error:
        raise _problem(key, error.message, error.field or "definition") from None
    if defn.key != key:
        raise _problem(key, f"its journey key is {defn.key!r}; the file must be named {defn.key}.yaml", "key")
    templates = _templates(key, data.get("templates", []))
    segments = _segments(key, data.get("segments", []))
    channels = {t.key: t.channel for t in templates}
    for step_key, channel, template in defn.templates():
        if template not in channels:
            raise _problem(key, f"step {step_key} sends {template!r}, which is not in templates", "templates")
        if channels[template] != channel:
            raise _problem(key, f"step {step_key} sends {template!r} on {channel}, not {channels[template]}")
    return Playbook(key, defn, source, templates, segments)


@cache
def playbook(key: str) -> Playbook:
    """A shipped playbook by key (NotFound, listing the keys, for an unknown one)."""
    if not isinstance(key, str) or key not in playbook_keys():
        raise NotFound(f"no playbook {key!r}; playbooks are {', '.join(playbook_keys())}", field="playbook")
    return load_playbook(key, (PLAYBOOKS_DIR / f"{key}.yaml").read_text(encoding="utf-8"))


def list_playbooks() -> list[dict[str, Any]]:
    """Every shipped playbook: key, name and description (zh-CN, en), trigger kind, templates, segments."""
    return [playbook(key).summary() for key in playbook_keys()]


def install_playbook(
    conn: Connection, workspace_id: int, key: str, *, publish: bool = False, now: datetime | None = None
) -> service.Journey:
    """Install a playbook in the caller's transaction: its missing templates and segments, then its
    journey as a draft (``playbook`` = key), published when ``publish``. Idempotent: a second install
    changes nothing (a draft edited since is put back to the playbook's; versions are never touched)."""
    from lifeloop.messaging.templates.service import create_template, get_template

    book = playbook(key)
    now = now or utcnow()
    for template in book.templates:
        try:
            get_template(conn, workspace_id, template.key)
        except NotFound:
            create_template(
                conn,
                workspace_id,
                key=template.key,
                channel=template.channel,
                variants=template.variants,
                default_locale=template.default_locale,
            )
    for segment in book.segments:
        _install_segment(conn, workspace_id, segment, now)
    draft = service.definition_dict(book.definition)
    try:
        journey: service.Journey | None = service.get_journey(conn, workspace_id, book.key)
    except NotFound:
        journey = None
    if journey is not None and journey.playbook != book.key:
        raise Conflict(
            f"a journey {book.key!r} exists that was not installed from this playbook; rename it first",
            field="playbook",
        )
    if journey is None or journey.draft != draft:
        journey = service.save_draft(conn, workspace_id, book.source, playbook=book.key, now=now)
    if publish and not _published_as_drafted(conn, workspace_id, journey):
        journey = service.publish(conn, workspace_id, book.key, by=f"playbook:{book.key}", now=now)
    return journey


def _published_as_drafted(conn: Connection, workspace_id: int, journey: service.Journey) -> bool:
    if journey.status != "active" or journey.version is None:
        return False
    current = service.version_definition(conn, workspace_id, journey.key, journey.version)
    return bool(current == journey.draft)


def _install_segment(conn: Connection, workspace_id: int, segment: PlaybookSegment, now: datetime) -> None:
    """Create the segment if the workspace has none by that key, and write its members now (as the
    segments API does after a new definition), in this transaction."""
    from lifeloop.audience import batch
    from lifeloop.audience.definitions import SEGMENT, create_segment, depends_on_time, get_segment, load
    from lifeloop.audience.state import Emits
    from lifeloop.lifecycle.service import live_profiles
    from lifeloop.store.locks import RESOLUTION, lock_workspace

    try:
        get_segment(conn, workspace_id, segment.key)
        return
    except NotFound:
        pass
    create_segment(conn, workspace_id, segment.key, segment.name, segment.condition, segment.description)
    lock_workspace(conn, RESOLUTION, workspace_id)
    audience = load(conn, workspace_id)
    created = next(x for x in audience.order if (x.kind, x.key) == (SEGMENT, segment.key))
    emits = Emits()  # nothing reads a segment that did not exist: only its own members change
    batch.apply_definition(conn, workspace_id, created, now=now, reason="definition", emits=emits)
    emits.flush(conn, workspace_id)
    if depends_on_time(created.condition):  # members join as time passes: every profile's recheck moment
        live = live_profiles(conn, workspace_id)
        if live:
            batch._write_rechecks(conn, workspace_id, audience, now=now, low=live[0], high=live[-1])
