"""Errors of the condition language: where in the text, what was expected, what was found."""

from __future__ import annotations

from lifeloop.errors import InvalidInput


def line_and_column(source: str, offset: int) -> tuple[int, int]:
    """1-based line and column of ``offset`` in ``source``."""
    before = source[:offset]
    line = before.count("\n") + 1
    column = offset - (before.rfind("\n") + 1) + 1
    return line, column


class ConditionSyntaxError(InvalidInput):
    """A condition that does not parse or does not make sense (e.g. comparing a count with a string).

    ``str(error)`` is the full report: the message, the position, the source line and a caret.
    """

    code = "invalid_condition"

    def __init__(
        self,
        message: str,
        *,
        source: str,
        offset: int,
        expected: str | None = None,
        found: str | None = None,
        field: str | None = "condition",
    ):
        self.source = source
        self.offset = offset
        self.line, self.column = line_and_column(source, offset)
        self.expected = expected
        self.found = found
        self.reason = message
        text_line = source.split("\n")[self.line - 1]
        caret = " " * (self.column - 1) + "^"
        report = f"{message} at line {self.line}, column {self.column}\n  {text_line}\n  {caret}"
        super().__init__(report, field=field)
