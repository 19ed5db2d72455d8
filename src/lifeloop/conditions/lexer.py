"""Text → tokens, each with its offset in the source (for error positions)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from lifeloop.conditions.errors import ConditionSyntaxError

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|<|>|=)
  | (?P<punct>[()\[\],.])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # number, string, ident, op, punct, end
    text: str
    pos: int
    value: Any = None

    def describe(self) -> str:
        if self.kind == "end":
            return "end of input"
        if self.kind == "string":
            return f"string {self.text}"
        if self.kind == "number":
            return f"number {self.text}"
        return f'"{self.text}"'


def tokenize(source: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if match is None:
            char = source[pos]
            if char == '"':
                raise ConditionSyntaxError(
                    'unterminated string: expected a closing "',
                    source=source,
                    offset=pos,
                    expected='"',
                    found="end of line",
                )
            raise ConditionSyntaxError(
                f"unexpected character {char!r}", source=source, offset=pos, found=repr(char)
            )
        kind, text = match.lastgroup or "", match.group()
        if kind == "string":
            try:
                value: Any = json.loads(text)
            except json.JSONDecodeError:
                raise ConditionSyntaxError(
                    'invalid escape in string (use JSON escapes: \\" \\\\ \\n \\t \\uXXXX)',
                    source=source,
                    offset=pos,
                ) from None
            tokens.append(Token(kind, text, pos, value))
        elif kind == "number":
            value = float(text) if any(c in text for c in ".eE") else int(text)
            if not math.isfinite(value) or abs(value) > 1e15:
                raise ConditionSyntaxError("number out of range (at most 1e15)", source=source, offset=pos)
            tokens.append(Token(kind, text, pos, value))
        elif kind != "space":
            tokens.append(Token(kind, text, pos))
        pos = match.end()
    tokens.append(Token("end", "", len(source)))
    return tokens
