"""Text → syntax tree: a tokenizer and a recursive-descent parser that also checks types.

The grammar is in docs/conditions.md. Every error names the position, what was expected and what
was found, so an operator can fix a rule without reading this file.
"""

from __future__ import annotations

from typing import Any, NoReturn

from lifeloop.conditions.ast import (
    COMPARE_OPS,
    INTERACTION,
    SEEN,
    SEEN_ALIASES,
    And,
    Compare,
    Condition,
    Contains,
    DaysSince,
    Exists,
    HasTag,
    In,
    InSegment,
    InStage,
    Literal,
    Not,
    Now,
    Or,
    PropertyRef,
    Seen,
    TraitRef,
    Value,
    static_type,
)
from lifeloop.conditions.errors import ConditionSyntaxError
from lifeloop.conditions.functions import FUNCTIONS, MAX_KEY, Call
from lifeloop.conditions.lexer import Token, tokenize

MAX_LENGTH = 10_000
MAX_DEPTH = 60

_ORDERING = ("<", "<=", ">", ">=")
_TYPE_WORDS = {"number": "a number", "string": "a string", "bool": "a boolean", "time": "a time"}


class _Parser:
    def __init__(self, source: str):
        self.source = source
        self.tokens = tokenize(source)
        self.i = 0
        self.depth = 0

    # --- helpers --------------------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def peek(self, ahead: int = 1) -> Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def advance(self) -> Token:
        token = self.tok
        self.i += 1
        return token

    def fail(self, message: str, token: Token | int | None = None, expected: str | None = None) -> NoReturn:
        if isinstance(token, int):
            offset, found = token, None
        else:
            token = token or self.tok
            offset, found = token.pos, token.describe()
        raise ConditionSyntaxError(message, source=self.source, offset=offset, expected=expected, found=found)

    def expected(self, what: str) -> Any:
        return self.fail(f"expected {what}, found {self.tok.describe()}", expected=what)

    def at(self, kind: str, text: str | None = None) -> bool:
        return self.tok.kind == kind and (text is None or self.tok.text == text)

    def accept(self, kind: str, text: str) -> bool:
        if self.at(kind, text):
            self.i += 1
            return True
        return False

    def expect(self, kind: str, text: str) -> Token:
        if not self.at(kind, text):
            self.expected(f'"{text}"')
        return self.advance()

    # --- conditions -----------------------------------------------------------------------------
    def parse(self, *, event_properties: bool = False) -> Condition:
        if self.at("end"):
            self.expected("a condition")
        condition = self.or_(in_where=event_properties)
        if not self.at("end"):
            self.expected('"and", "or" or end of input')
        return condition

    def or_(self, *, in_where: bool) -> Condition:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(f"condition nested too deeply (at most {MAX_DEPTH} levels)")
        items = [self.and_(in_where=in_where)]
        while self.accept("ident", "or"):
            items.append(self.and_(in_where=in_where))
        self.depth -= 1
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_(self, *, in_where: bool) -> Condition:
        items = [self.not_(in_where=in_where)]
        while self.accept("ident", "and"):
            items.append(self.not_(in_where=in_where))
        return items[0] if len(items) == 1 else And(tuple(items))

    def not_(self, *, in_where: bool) -> Condition:
        if self.accept("ident", "not"):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                self.fail(f"condition nested too deeply (at most {MAX_DEPTH} levels)")
            item = self.not_(in_where=in_where)
            self.depth -= 1
            return Not(item)
        if self.accept("punct", "("):
            inner = self.or_(in_where=in_where)
            self.expect("punct", ")")
            return inner
        return self.comparison(in_where=in_where)

    def comparison(self, *, in_where: bool) -> Condition:
        start = self.tok
        left = self.value(in_where=in_where)
        if self.tok.kind == "op" and self.tok.text in COMPARE_OPS:
            op_token = self.advance()
            right_token = self.tok
            right = self.value(in_where=in_where)
            for node, token in ((left, start), (right, right_token)):
                if _is_predicate(node) and not isinstance(node, Literal):
                    self.fail("a condition cannot be compared; combine conditions with and/or/not", token)
            self.check_compare(op_token.text, left, right, op_token)  # type: ignore[arg-type]
            return Compare(op_token.text, left, right)  # type: ignore[arg-type]
        if self.at("op", "="):
            self.fail('expected a comparison operator, found "="; use "==" to test equality', expected="==")
        if self.accept("ident", "in"):
            return self.in_list(left, start)  # type: ignore[arg-type]
        if self.at("ident", "contains"):
            op_token = self.advance()
            item_token = self.tok
            item = self.value(in_where=in_where)
            if not isinstance(left, TraitRef | PropertyRef):
                self.fail("contains needs a trait or property on its left", op_token)
            if not isinstance(item, Literal):
                self.fail("contains needs a string, number or boolean literal on its right", item_token)
            return Contains(left, item)
        if _is_predicate(left):
            return left  # type: ignore[return-value]
        return self.expected("a comparison operator (==, !=, <, <=, >, >=, in, contains)")

    def in_list(self, left: Value, start: Token) -> Condition:
        self.expect("punct", "[")
        options: list[Literal] = []
        while not self.at("punct", "]"):
            if options:
                self.expect("punct", ",")
            token = self.tok
            option = self.value(in_where=False)
            if not isinstance(option, Literal):
                self.fail("a list holds literals only (strings, numbers, true, false)", token)
            self.check_compare("==", left, option, token)
            options.append(option)
        self.advance()
        return In(left, tuple(options))

    def check_compare(self, op: str, left: Value, right: Value, at: Token) -> None:
        lt, rt = static_type(left), static_type(right)
        for one, other in ((left, right), (right, left)):
            if isinstance(one, DaysSince) and not (
                isinstance(other, Literal) and static_type(other) == "number"
            ):
                self.fail("days_since(...) can only be compared with a number", at)
        if lt == rt == "dynamic":
            self.fail("compare a trait or property with a literal or a computed value, not with another", at)
        known = [t for t in (lt, rt) if t != "dynamic"]
        if len(known) == 2 and lt != rt:
            self.fail(f"cannot compare {_TYPE_WORDS[lt]} with {_TYPE_WORDS[rt]}", at)
        kind = known[0]
        if kind == "time" and len(known) == 1:
            self.fail("a trait or property cannot be compared with a time; use days_since()", at)
        if kind == "bool" and op in _ORDERING:
            self.fail(f"booleans can only be compared with == or !=, not {op}", at)

    # --- values ---------------------------------------------------------------------------------
    def value(self, *, in_where: bool) -> Value | Condition:
        token = self.tok
        if token.kind in ("number", "string"):
            self.advance()
            return Literal(token.value)
        if token.kind != "ident":
            return self.expected("a value (a number, a string, trait.…, or a function such as count(…))")
        name = token.text
        if name in ("true", "false"):
            self.advance()
            return Literal(name == "true")
        if name == "now":
            self.advance()
            return Now()
        if name in SEEN or name in SEEN_ALIASES:
            self.advance()
            return Seen(SEEN_ALIASES.get(name, name))
        if name == "trait":
            self.advance()
            return TraitRef(self.path("trait"))
        if name == "property":
            if not in_where:
                self.fail("property.… can only be used inside where=", token)
            self.advance()
            return PropertyRef(self.path("property"))
        if name == "interaction":
            self.fail("interaction names events: use it inside count(), sum(), first() or last()", token)
        if self.peek().kind == "punct" and self.peek().text == "(":
            if name not in FUNCTIONS:
                self.fail(f"unknown function {name}(); expected one of {', '.join(FUNCTIONS)}", token)
            return self.call(token, in_where=in_where)
        return self.fail(
            f"unknown name {name}; expected a value such as trait.{name}, a function or a literal", token
        )

    def path(self, root: str) -> tuple[str, ...]:
        keys: list[str] = []
        while True:
            if self.accept("punct", "."):
                if self.tok.kind != "ident":
                    self.expected(f"a name after {root}.")
                key_token = self.advance()
                key = key_token.text
            elif self.accept("punct", "["):
                key_token = self.tok
                if key_token.kind != "string":
                    self.expected('a quoted name, as in trait["first name"]')
                self.advance()
                key = key_token.value
                self.expect("punct", "]")
            else:
                break
            if not key or len(key) > MAX_KEY or '"' in key or "\\" in key:
                self.fail(f'a {root} name must be 1-{MAX_KEY} characters without " or \\', key_token)
            keys.append(key)
        if not keys:
            self.expected(f'"." or "[" after {root} (as in {root}.city or {root}["first name"])')
        return tuple(keys)

    def call(self, name_token: Token, *, in_where: bool) -> Value | Condition:
        name = name_token.text
        self.advance()
        self.expect("punct", "(")
        positional: list[tuple[Any, Token]] = []
        keywords: dict[str, tuple[Any, Token]] = {}
        while not self.at("punct", ")"):
            if positional or keywords:
                self.expect("punct", ",")
            token = self.tok
            if token.kind == "ident" and self.peek().kind == "op" and self.peek().text == "=":
                self.i += 2
                if token.text in keywords:
                    self.fail(f"{token.text}= given twice", token)
                value: Any
                if token.text == "where":
                    value = self.or_(in_where=True)
                    _check_where(self, value, token)
                else:
                    value = self.value(in_where=False)
                keywords[token.text] = (value, token)
                continue
            if keywords:
                self.fail("positional arguments come before keyword arguments", token)
            if token.kind == "ident" and token.text == "interaction":
                self.advance()
                positional.append((INTERACTION, token))
            else:
                positional.append((self.value(in_where=in_where), token))
        close = self.advance()
        return Call(self, name, name_token, positional, keywords, close).build()


def _is_predicate(node: Any) -> bool:
    return isinstance(node, HasTag | InStage | InSegment | Exists) or (
        isinstance(node, Literal) and isinstance(node.value, bool)
    )


def _check_where(parser: _Parser, condition: Condition, at: Token) -> None:
    """where= filters single events: property tests against literals, combined with and/or/not."""

    def fine(value: Any) -> bool:
        return isinstance(value, Literal | PropertyRef)

    def walk(node: Any) -> None:
        if isinstance(node, And | Or):
            for item in node.items:
                walk(item)
        elif isinstance(node, Not):
            walk(node.item)
        elif not (
            (isinstance(node, Compare) and fine(node.left) and fine(node.right))
            or (isinstance(node, In | Contains) and fine(node.value))
            or (isinstance(node, Exists) and isinstance(node.ref, PropertyRef))
            or isinstance(node, Literal)
        ):
            parser.fail("where= may only test event properties (property.…) against literals", at)

    walk(condition)


def parse(source: str, *, field: str | None = "condition", event_properties: bool = False) -> Condition:
    """Parse and type-check a condition; raises ConditionSyntaxError (an InvalidInput) with the position.

    With ``event_properties`` the condition may also read ``property.…`` of one event outside
    ``where=`` (a journey's trigger filter or branch); only the real-time evaluator runs those.
    """
    if not isinstance(source, str):
        raise ConditionSyntaxError("a condition must be text", source="", offset=0, field=field)
    if len(source) > MAX_LENGTH:
        raise ConditionSyntaxError(
            f"condition longer than {MAX_LENGTH} characters", source=source[:200], offset=0, field=field
        )
    try:
        return _Parser(source).parse(event_properties=event_properties)
    except ConditionSyntaxError as error:
        error.field = field
        raise
