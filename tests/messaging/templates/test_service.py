"""Templates stored per workspace, versioned, previewed against a real profile."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from lifeloop.errors import Conflict, InvalidInput, NotFound
from lifeloop.events.messages import parse_message
from lifeloop.events.service import ingest
from lifeloop.messaging.templates.service import (
    TemplateRenderError,
    create_template,
    get_template,
    list_templates,
    preview,
    profile_context,
    render_template,
    update_template,
)
from lifeloop.profiles.resolver import resolve_pending
from lifeloop.profiles.service import find_by_identity
from lifeloop.store.schema import utcnow
from lifeloop.workspaces.models import SourceKey
from tests.conftest import Brand, make_brand

WELCOME: dict[str, dict[str, Any]] = {
    "zh-TW": {"text": "{{ traits.name }} 您好，歡迎加入 {{ workspace.name }}！"},
    "zh-CN": {"text": "{{ traits.name }} 您好，欢迎加入！"},
    "en": {"text": "Hi {{ traits.name | default: 'there' }}, welcome!"},
    "ja": {"text": "{{ traits.name }}様、ようこそ！"},
    "th": {"text": "สวัสดี {{ traits.name }}"},
}


def make_profile(engine: sa.Engine, brand: Brand, user_id: str, traits: dict[str, Any]) -> int:
    now = utcnow()
    messages = [
        parse_message({"type": "identify", "userId": user_id, "traits": traits}, received_at=now),
        parse_message({"type": "track", "userId": user_id, "event": "Order Completed"}, received_at=now),
    ]
    ingest(engine, SourceKey(brand.workspace_id, brand.source_id), messages)
    resolve_pending(engine)
    with engine.connect() as conn:
        return find_by_identity(conn, brand.workspace_id, "user_id", user_id)


def test_create_and_preview_against_a_real_profile(engine: sa.Engine, brand: Brand) -> None:
    pid = make_profile(engine, brand, "u-1", {"name": "陳美玲", "locale": "zh-TW"})
    with engine.begin() as conn:
        created = create_template(conn, brand.workspace_id, key="welcome", channel="line", variants=WELCOME)
    assert created.version == 1 and created.default_locale == "en"
    with engine.connect() as conn:
        own = preview(conn, brand.workspace_id, "welcome", profile_id=pid)  # the profile's own locale
        thai = preview(conn, brand.workspace_id, "welcome", profile_id=pid, locale="th")
        context, locale = profile_context(conn, brand.workspace_id, pid, event={"product": "杯"})
    assert (own.locale, own.content) == ("zh-TW", {"text": "陳美玲 您好，歡迎加入 acme！"})
    assert thai.content == {"text": "สวัสดี 陳美玲"} and thai.version == 1
    assert locale == "zh-TW" and context["event"] == {"product": "杯"}
    assert context["computed"]["event_count"] == 2 and context["computed"]["days_since_last_seen"] == 0
    assert context["profile"]["user_id"] == "u-1" and context["traits"]["name"] == "陳美玲"


def test_a_profile_missing_a_variable_gets_no_message(engine: sa.Engine, brand: Brand) -> None:
    pid = make_profile(engine, brand, "u-2", {"locale": "ja"})  # no name
    with engine.begin() as conn:
        create_template(conn, brand.workspace_id, key="welcome", channel="line", variants=WELCOME)
    with engine.connect() as conn:
        with pytest.raises(TemplateRenderError) as error:
            preview(conn, brand.workspace_id, "welcome", profile_id=pid)
        english = preview(conn, brand.workspace_id, "welcome", profile_id=pid, locale="en")
    assert error.value.locale == "ja" and "traits.name is undefined" in error.value.reason
    assert english.content == {"text": "Hi there, welcome!"}  # `| default` makes it optional


def test_render_for_a_send_step(engine: sa.Engine, brand: Brand) -> None:
    with engine.begin() as conn:
        template = create_template(
            conn,
            brand.workspace_id,
            key="order-shipped",
            channel="email",
            default_locale="zh-CN",
            variants={"zh-CN": {"subject": "{{ event.product }} 已发货", "html": "<p>{{ traits.name }}</p>"}},
        )
    rendered = render_template(
        template, {"event": {"product": "杯"}, "traits": {"name": "<b>"}}, locale="zh-TW"
    )
    assert rendered.locale == "zh-CN" and rendered.content == {
        "subject": "杯 已发货",
        "html": "<p>&lt;b&gt;</p>",
    }


def test_updates_bump_the_version_and_refuse_stale_edits(engine: sa.Engine, brand: Brand) -> None:
    with engine.begin() as conn:
        create_template(conn, brand.workspace_id, key="welcome", channel="line", variants=WELCOME)
        v2 = update_template(
            conn, brand.workspace_id, "welcome", variants={"en": {"text": "Hello"}}, expected_version=1
        )
        v3 = update_template(conn, brand.workspace_id, "welcome", default_locale="en")
    assert (v2.version, v3.version) == (2, 3) and v3.variants == {"en": {"text": "Hello"}}
    with engine.begin() as conn, pytest.raises(Conflict, match="version 3"):
        update_template(conn, brand.workspace_id, "welcome", variants=WELCOME, expected_version=2)
    with engine.connect() as conn:
        assert get_template(conn, brand.workspace_id, "welcome").version == 3


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"key": "Bad Key"}, "key"),
        ({"channel": "fax"}, "channel"),
        ({"variants": {}}, "variants"),
        ({"variants": {"en": "text"}}, "variants.en"),
        ({"variants": {"not a locale": {"text": "x"}}}, "variants"),
        ({"variants": {"en": {"text": "{% if %}"}}}, "variants.en.text"),
        ({"variants": {"zh-TW": {"text": "x"}}, "default_locale": "en"}, "default_locale"),
        (
            {"variants": {"zh_TW": {"text": "x"}, "zh-tw": {"text": "y"}}, "default_locale": "zh-TW"},
            "variants.zh-tw",
        ),
    ],
)
def test_invalid_templates_are_refused_and_nothing_is_stored(
    engine: sa.Engine, brand: Brand, kwargs: dict[str, Any], field: str
) -> None:
    args: dict[str, Any] = {"key": "welcome", "channel": "line", "variants": WELCOME, **kwargs}
    with engine.begin() as conn, pytest.raises(InvalidInput) as error:
        create_template(conn, brand.workspace_id, **args)
    assert error.value.field == field
    with engine.connect() as conn:
        assert list_templates(conn, brand.workspace_id) == []


def test_templates_belong_to_one_workspace(engine: sa.Engine, brand: Brand) -> None:
    other = make_brand(engine, "rival")
    with engine.begin() as conn:
        create_template(conn, brand.workspace_id, key="welcome", channel="line", variants=WELCOME)
        create_template(
            conn,
            other.workspace_id,
            key="welcome",
            channel="email",
            variants={"en": {"subject": "x", "text": "y"}},
        )
        with pytest.raises(Conflict):
            create_template(conn, brand.workspace_id, key="welcome", channel="line", variants=WELCOME)
    with engine.connect() as conn:
        assert [t.channel for t in list_templates(conn, brand.workspace_id)] == ["line"]
        assert [t.key for t in list_templates(conn, other.workspace_id, channel="line")] == []
        with pytest.raises(NotFound):
            get_template(conn, other.workspace_id, "nope")
