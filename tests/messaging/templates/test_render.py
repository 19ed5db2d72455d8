"""Liquid rendering: strict variables, escaping, locale fallback, bounded work, errors with reasons."""

from __future__ import annotations

from typing import Any

import pytest

from lifeloop.errors import InvalidInput
from lifeloop.messaging.templates.render import (
    TemplateRenderError,
    check_source,
    choose_variant,
    locale_chain,
    normalise_locale,
    render_variant,
)

CONTEXT: dict[str, Any] = {
    "profile": {"id": 1, "user_id": "u-1"},
    "traits": {"name": "王小明", "tier": "vip", "bio": "<script>x</script>", "points": 1200},
    "computed": {"days_since_last_seen": 31, "orders": 3},
    "event": {"product": "保温杯", "price": 399.5},
    "workspace": {"name": "Acme"},
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("Hi {{ traits.name }}", "Hi 王小明"),
        ("{{ traits.city | default: '朋友' }}", "朋友"),
        ("{% if traits.tier == 'vip' %}VIP{% else %}member{% endif %}", "VIP"),
        ("{{ event.product }} NT${{ event.price | round }}", "保温杯 NT$400"),
        ("{{ computed.days_since_last_seen | minus: 1 }} days", "30 days"),
        ("{{ traits.bio }}", "<script>x</script>"),  # text is not HTML: no escaping
        ("no variables at all", "no variables at all"),
    ],
)
def test_text_rendering(source: str, expected: str) -> None:
    assert render_variant({"text": source}, CONTEXT, locale="en") == {"text": expected}


def test_html_fields_escape_variables() -> None:
    out = render_variant({"html": "<p>{{ traits.bio }}</p>"}, CONTEXT, locale="en")
    assert out == {"html": "<p>&lt;script&gt;x&lt;/script&gt;</p>"}


def test_structured_fields_render_every_string() -> None:
    flex = {"type": "bubble", "body": {"contents": [{"type": "text", "text": "{{ traits.points }} 點"}, 3]}}
    assert render_variant({"flex": flex, "alt_text": "{{ traits.name }}"}, CONTEXT, locale="zh-TW") == {
        "flex": {"type": "bubble", "body": {"contents": [{"type": "text", "text": "1200 點"}, 3]}},
        "alt_text": "王小明",
    }


@pytest.mark.parametrize(
    ("variant", "field", "reason"),
    [
        ({"subject": "ok", "text": "Hi {{ traits.city }}"}, "text", "traits.city is undefined"),
        ({"text": "{{ nothing }}"}, "text", "'nothing' is undefined"),
        ({"text": "{{ traits.name | no_such_filter }}"}, "text", "no_such_filter"),
        ({"text": "{% for i in (1..100000) %}x{% endfor %}"}, "text", "loop iteration limit"),
        ({"text": "{{ 1 | divided_by: 0 }}"}, "text", "can't divide by 0"),
    ],
)
def test_a_failed_render_raises_with_the_reason(variant: dict[str, str], field: str, reason: str) -> None:
    with pytest.raises(TemplateRenderError) as error:
        render_variant(variant, CONTEXT, locale="zh-TW")
    assert error.value.field == field and error.value.locale == "zh-TW"
    assert reason in error.value.reason and reason in error.value.message


@pytest.mark.parametrize("source", ["{% if %}", "{{ unclosed", "{% for x in %}{% endfor %}"])
def test_syntax_errors_are_caught_when_saved(source: str) -> None:
    with pytest.raises(InvalidInput) as error:
        check_source({"body": [source]}, locale="en", field="flex")
    assert error.value.field == "variants.en.flex"


@pytest.mark.parametrize(
    ("requested", "available", "default", "chosen"),
    [
        ("zh-TW", ["zh-TW", "zh-CN", "en"], "en", "zh-TW"),
        ("zh_tw", ["zh-CN", "en"], "en", "zh-CN"),  # Traditional falls back to another Chinese
        ("zh-HK", ["zh-TW", "zh-CN"], "zh-CN", "zh-TW"),  # Hong Kong reads Traditional first
        ("zh-TW", ["zh-Hant", "zh-CN"], "zh-CN", "zh-Hant"),
        ("ja", ["zh-TW", "en", "ja"], "zh-TW", "ja"),
        ("th", ["zh-TW", "en"], "zh-TW", "en"),  # no Thai: English before the default
        ("th", ["zh-TW", "ja"], "ja", "ja"),  # nor English: the template's default
        (None, ["en", "zh-CN"], "zh-CN", "zh-CN"),  # unknown recipient: the default
        ("en-US", ["en", "ja"], "ja", "en"),
        ("ko", ["ja"], "zh-TW", "ja"),  # nothing fits: whatever exists
    ],
)
def test_locale_fallback(requested: str | None, available: list[str], default: str, chosen: str) -> None:
    assert choose_variant({key: {} for key in available}, requested, default) == chosen


def test_locale_names_are_normalised() -> None:
    assert [normalise_locale(x) for x in ("zh_tw", "ZH-cn", "zh-hant-tw", "EN")] == [
        "zh-TW",
        "zh-CN",
        "zh-Hant-TW",
        "en",
    ]
    assert locale_chain("zh-TW", "en")[:3] == ["zh-TW", "zh-HK", "zh-Hant"]
