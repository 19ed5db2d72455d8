"""Every string the console shows is translated into Traditional and Simplified Chinese."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from babel.messages.pofile import read_po

from lifeloop.web.console.i18n import catalogue_files, console_messages, negotiate, untranslated
from tests.web.console.conftest import Console

PLACEHOLDER = re.compile(r"%\(\w+\)[sd]|\{\w+\}")


@pytest.mark.parametrize("locale", ["zh-TW", "zh-CN"])
def test_every_console_string_is_translated(locale: str) -> None:
    assert len(console_messages()) > 50
    missing = sorted(untranslated(locale))
    assert not missing, f"{len(missing)} strings without a {locale} translation: {missing}"


@pytest.mark.parametrize("locale", ["zh-TW", "zh-CN"])
def test_catalogues_agree_with_themselves(locale: str) -> None:
    """No msgid in two files (one would silently win), and placeholders survive translation."""
    seen: Counter[str] = Counter()
    for path in catalogue_files(locale):
        with path.open("rb") as po:
            for message in read_po(po):
                if not message.id:
                    continue
                text = message.id if isinstance(message.id, str) else message.id[0]
                seen[text] += 1
                translated = message.string if isinstance(message.string, str) else message.string[0]
                assert sorted(PLACEHOLDER.findall(text)) == sorted(PLACEHOLDER.findall(translated)), text
    assert not [m for m, n in seen.items() if n > 1]


@pytest.mark.parametrize(
    ("header", "locale"),
    [("zh-TW,zh;q=0.9", "zh-TW"), ("zh-HK", "zh-TW"), ("zh-CN,zh;q=0.8", "zh-CN"), ("en-US", "en"),
     ("fr-FR, en;q=0.5", "en"), ("", "zh-TW"), ("ja", "zh-TW")],
)  # fmt: skip
def test_the_login_page_speaks_the_browsers_language(header: str, locale: str) -> None:
    assert negotiate(header) == locale


def test_each_user_reads_the_console_in_their_language(console: Console) -> None:
    english = console.get("/")
    assert "Overview" in english.text and "總覽" not in english.text
    switched = console.post("/preferences/locale", {"locale": "zh-TW", "next": "/settings"})
    assert switched.status_code == 200 and "設定" in switched.text and "稽核紀錄" in switched.text
    assert "简体中文" in switched.text  # the switch names each language in itself
    simplified = console.post("/preferences/locale", {"locale": "zh-CN", "next": "/"})
    assert "总览" in simplified.text
    refused = console.post("/preferences/locale", {"locale": "klingon", "next": "/"})
    assert refused.status_code == 400
