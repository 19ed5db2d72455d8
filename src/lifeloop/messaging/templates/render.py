"""Rendering Liquid templates: strict about missing variables, per-locale variants, never half-rendered.

A variant is ``{field: Liquid source}``; a field may also hold a JSON structure (a LINE Flex bubble,
WeChat template data) whose every string is rendered. Any failure raises ``TemplateRenderError``
with the locale, field and reason, and nothing is returned, so nothing half-rendered is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any, ClassVar

from liquid import Environment, StrictDefaultUndefined
from liquid.exceptions import LiquidError

from lifeloop.errors import InvalidInput

HTML_FIELDS = frozenset({"html"})  # fields rendered with HTML escaping of every variable


class TemplateRenderError(InvalidInput):
    """A template that cannot be rendered for this context; the message is the reason to record.

    ``line`` is the line of the field's source where rendering failed (1-based), when Liquid knows it,
    so an editor can point at it.
    """

    code = "template_render_error"

    def __init__(
        self, reason: str, *, locale: str | None = None, field: str | None = None, line: int | None = None
    ) -> None:
        where = f" ({locale}, {field})" if locale and field else ""
        super().__init__(f"template does not render{where}: {reason}", field=field)
        self.reason = reason
        self.locale = locale
        self.line = line


class TemplateSyntaxError(InvalidInput):
    """A variant field that does not parse as Liquid, refused when the template is saved.

    ``locale`` and ``source_field`` name the field, ``line`` the line of its source (1-based) where
    Liquid stopped, when known.
    """

    def __init__(self, message: str, *, locale: str, source_field: str, line: int | None) -> None:
        super().__init__(message, field=f"variants.{locale}.{source_field}")
        self.locale = locale
        self.source_field = source_field
        self.line = line


class _Env(Environment):
    # Bounds, so an operator's template cannot take a worker down.
    loop_iteration_limit: ClassVar[int | None] = 10_000
    output_stream_limit: ClassVar[int | None] = 512 * 1024
    local_namespace_limit: ClassVar[int | None] = 64 * 1024


# StrictDefaultUndefined: a missing variable is an error, unless the template says `| default: …`.
TEXT_ENV = _Env(undefined=StrictDefaultUndefined)
HTML_ENV = _Env(undefined=StrictDefaultUndefined, autoescape=True)


def _reason(error: Exception) -> str:
    message = getattr(error, "message", None) or str(error)
    return str(message).splitlines()[0].strip()


def _line(error: Exception) -> int | None:
    """The 1-based line of the token Liquid failed on, from the error's token (None when it has none)."""
    token = getattr(error, "token", None)
    source, index = getattr(token, "source", None), getattr(token, "start_index", None)
    if isinstance(source, str) and isinstance(index, int):
        return source.count("\n", 0, index) + 1
    return None


def normalise_locale(locale: str) -> str:
    """``zh_tw`` → ``zh-TW``; language lower-case, region upper-case, script title-case."""
    parts = locale.replace("_", "-").split("-")
    out = [parts[0].lower()]
    for part in parts[1:]:
        out.append(part.upper() if len(part) == 2 else part.title())
    return "-".join(p for p in out if p)


# After the exact locale and its language: the closest written form, then English, then the default.
_NEIGHBOURS = {"zh-TW": ["zh-HK", "zh-Hant"], "zh-HK": ["zh-TW", "zh-Hant"], "zh-CN": ["zh-SG", "zh-Hans"]}


def locale_chain(requested: str | None, default: str) -> list[str]:
    """Locales to try in order, e.g. zh-TW → zh-HK → zh → zh-CN (any zh) → en → the default."""
    if not requested:  # nothing known about the recipient: the template's own language
        return list(dict.fromkeys([normalise_locale(default), "en", "en-*"]))
    loc = normalise_locale(requested)
    lang = loc.split("-")[0]
    chain = [loc, *_NEIGHBOURS.get(loc, []), lang, f"{lang}-*", "en", "en-*", normalise_locale(default)]
    return list(dict.fromkeys(chain))


def choose_variant(variants: Mapping[str, Any], requested: str | None, default: str) -> str:
    """The locale of the variant to use for a recipient who prefers ``requested``."""
    if not variants:
        raise TemplateRenderError("the template has no variants")
    by_norm = {normalise_locale(k): k for k in variants}
    for candidate in locale_chain(requested, default):
        if candidate.endswith("-*"):
            lang = candidate[:-2]
            for norm, original in sorted(by_norm.items()):
                if norm.split("-")[0] == lang:
                    return original
        elif candidate in by_norm:
            return by_norm[candidate]
    return next(iter(variants))


def check_source(source: Any, *, locale: str, field: str) -> None:
    """Parse every string of a field now, so a syntax error is refused when the template is saved."""
    for text in _strings(source):
        try:
            (HTML_ENV if field in HTML_FIELDS else TEXT_ENV).from_string(text)
        except LiquidError as error:
            raise TemplateSyntaxError(
                f"Liquid syntax error in {locale}.{field}: {_reason(error)}",
                locale=locale,
                source_field=field,
                line=_line(error),
            ) from None


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


@lru_cache(maxsize=2048)
def _parsed(env: Environment, source: str) -> Any:
    # A journey or broadcast renders one source for thousands of recipients: parse it once.
    return env.from_string(source)


def _render_value(value: Any, env: Environment, context: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        return _parsed(env, value).render(**context) if ("{{" in value or "{%" in value) else value
    if isinstance(value, dict):
        return {k: _render_value(v, env, context) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_value(v, env, context) for v in value]
    return value


def render_variant(variant: Mapping[str, Any], context: Mapping[str, Any], *, locale: str) -> dict[str, Any]:
    """Every field of one variant, rendered; TemplateRenderError on the first failure."""
    rendered: dict[str, Any] = {}
    for field, source in variant.items():
        env = HTML_ENV if field in HTML_FIELDS else TEXT_ENV
        try:
            rendered[field] = _render_value(source, env, context)
        except LiquidError as error:
            raise TemplateRenderError(_reason(error), locale=locale, field=field, line=_line(error)) from None
        except (TypeError, ValueError, ArithmeticError, RecursionError) as error:  # a filter on bad data
            raise TemplateRenderError(
                f"{type(error).__name__}: {error}", locale=locale, field=field
            ) from None
    return rendered
