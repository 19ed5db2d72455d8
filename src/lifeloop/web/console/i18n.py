"""Console translations: gettext catalogues (``locales/<locale>/LC_MESSAGES/*.po``) read with Babel.

Each page keeps its strings in its own catalogue file, so pages are translated independently; all files
of a locale are merged into one ``Translations``. English is the source language: an English page shows
the msgids. ``.po`` files are compiled in memory when first used, so there is no build step.
"""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

from babel.core import Locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

from lifeloop.accounts.models import LOCALES

LOCALE_DIR = Path(__file__).parent / "locales"
DEFAULT_LOCALE = "zh-TW"  # the demo brand is Taiwanese, and LINE's biggest markets read Traditional Chinese
LANGUAGE_NAMES = {"zh-TW": "繁體中文", "zh-CN": "简体中文", "en": "English"}


def _folder(locale: str) -> str:
    return locale.replace("-", "_")


def catalogue_files(locale: str) -> list[Path]:
    return sorted((LOCALE_DIR / _folder(locale) / "LC_MESSAGES").glob("*.po"))


@cache
def translations(locale: str) -> NullTranslations:
    """Every catalogue of ``locale`` merged (English: none, the msgids are the English text)."""
    if locale == "en" or locale not in LOCALES:
        return NullTranslations()
    merged: Translations | None = None
    for path in catalogue_files(locale):
        with path.open("rb") as po:
            catalogue = read_po(po, locale=_folder(locale))
        buffer = io.BytesIO()
        write_mo(buffer, catalogue)
        buffer.seek(0)
        part = Translations(buffer)
        merged = part if merged is None else merged.merge(part)
    return merged or NullTranslations()


def negotiate(accept_language: str | None) -> str:
    """The supported locale a browser asks for first (``Accept-Language``), else the default."""
    wanted: list[tuple[float, str]] = []
    for part in (accept_language or "").split(","):
        tag, _, q = part.strip().partition(";q=")
        try:
            wanted.append((float(q) if q else 1.0, tag.strip()))
        except ValueError:
            continue
    for _, tag in sorted(wanted, key=lambda item: -item[0]):
        lowered = tag.lower()
        if lowered in ("zh-tw", "zh-hk", "zh-hant", "zh-hant-tw", "zh-mo"):
            return "zh-TW"
        if lowered.startswith("zh"):
            return "zh-CN"
        if lowered.startswith("en"):
            return "en"
    return DEFAULT_LOCALE


def babel_locale(locale: str) -> Locale:
    return Locale.parse(_folder(locale))


def N_(message: str) -> str:  # gettext's conventional name
    """Marks a string for translation where it is defined (a label in a table), translated when shown."""
    return message


# Shown through ``_(value)`` in templates, so the extractor cannot see them where they are used.
MARKED = [N_("admin"), N_("operator"), N_("analyst"), N_("viewer")]


def console_messages() -> set[str]:
    """Every msgid the console's templates and Python code use (what each catalogue must translate)."""
    from babel.messages.extract import extract_from_dir

    root = Path(__file__).parent
    keywords = {"_": None, "gettext": None, "N_": None, "ngettext": (1, 2)}
    found: set[str] = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        root,
        method_map=[("**.py", "python"), ("templates/**.html", "jinja2")],
        options_map={"templates/**.html": {"extensions": "jinja2.ext.i18n", "trimmed": "false"}},
        keywords=keywords,
    ):
        for text in message if isinstance(message, tuple) else (message,):
            if text:
                found.add(text)
    return found


def untranslated(locale: str) -> set[str]:
    """The console's msgids with no translation in ``locale``'s catalogues."""
    known: dict[str, str] = {}
    for path in catalogue_files(locale):
        with path.open("rb") as po:
            for message in read_po(po, locale=_folder(locale)):
                if message.id and message.string:
                    text = message.id if isinstance(message.id, str) else message.id[0]
                    known[text] = str(message.string)
    return {m for m in console_messages() if m not in known}
