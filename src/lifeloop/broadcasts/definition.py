"""What a broadcast is, as data: who (the audience), what (variants of a message on a channel order),
when (now, at a time, or at each user's best hour within a window) and what counts as a conversion."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lifeloop.conditions import parse
from lifeloop.conditions.ast import parse_duration
from lifeloop.errors import InvalidInput
from lifeloop.messaging.policy import CHANNELS

KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MAX_LISTED = 100_000  # ids in an uploaded list


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Audience(_Strict):
    """Who receives it: every part given must hold (an uploaded list narrowed by a tag, say)."""

    segment: str | None = Field(None, description="Members of this saved segment.")
    condition: str | None = Field(None, description="A condition in the condition language.")
    tags: list[str] | None = Field(None, min_length=1, max_length=50)
    tags_match: Literal["any", "all"] = Field("any", description="Hold any of the tags, or all of them.")
    stages: list[str] | None = Field(
        None, min_length=1, max_length=50, description='Current stage: "stage" (any model) or "model:stage".'
    )
    tiers: list[str] | None = Field(
        None, min_length=1, max_length=10, description="Value tiers (regular, high_value, sleeping, lost…)."
    )
    user_ids: list[str] | None = Field(None, min_length=1, max_length=MAX_LISTED)
    profile_ids: list[int] | None = Field(None, min_length=1, max_length=MAX_LISTED)

    @model_validator(mode="after")
    def _something(self) -> Audience:
        given = [
            self.segment,
            self.condition,
            self.tags,
            self.stages,
            self.tiers,
            self.user_ids,
            self.profile_ids,
        ]
        if all(part is None for part in given):
            raise ValueError(
                "name who receives it: segment, condition, tags, stages, tiers, user_ids or profile_ids"
            )
        if self.condition is not None:
            parse(self.condition, field="audience.condition")
        return self

    def condition_text(self) -> str | None:
        """The segment, condition, tags and stages as one condition (None: nothing to test in SQL)."""
        parts = []
        if self.segment:
            parts.append(f"in_segment({_quoted(self.segment)})")
        if self.condition:
            parts.append(f"({self.condition})")
        if self.tags:
            joined = f" {'or' if self.tags_match == 'any' else 'and'} ".join(
                f"has_tag({_quoted(t)})" for t in self.tags
            )
            parts.append(f"({joined})")
        if self.stages:
            tests = []
            for stage in self.stages:
                model, _, name = stage.rpartition(":")
                tests.append(
                    f"in_stage({_quoted(model)}, {_quoted(name)})" if model else f"in_stage({_quoted(name)})"
                )
            parts.append(f"({' or '.join(tests)})")
        return " and ".join(parts) or None


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ChannelMessage(_Strict):
    channel: Literal["line", "wecom", "wechat", "email", "sms", "webhook"]
    template: str = Field(min_length=1, max_length=64, description="A stored template of that channel.")


class Variant(_Strict):
    key: str = Field(min_length=1, max_length=64)
    weight: float = Field(1.0, gt=0, le=1000)
    channels: list[ChannelMessage] = Field(min_length=1, max_length=len(CHANNELS))

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not KEY.match(value) or value == "holdout":
            raise ValueError("a variant key is lower-case letters, digits, _ or - (and not 'holdout')")
        return value

    @field_validator("channels")
    @classmethod
    def _distinct(cls, value: list[ChannelMessage]) -> list[ChannelMessage]:
        if len({c.channel for c in value}) != len(value):
            raise ValueError("each channel comes once in a channel order")
        return value


class Schedule(_Strict):
    mode: Literal["now", "at", "best_hour"] = "now"
    at: datetime | None = Field(
        None,
        description="at: when to send; best_hour: the window's start (default: when scheduled). "
        "Without an offset, read in the workspace's time zone.",
    )
    until: datetime | None = Field(None, description="best_hour: the window's end.")

    @model_validator(mode="after")
    def _fits(self) -> Schedule:
        if self.mode == "at" and self.at is None:
            raise ValueError("mode 'at' needs the time to send (at)")
        if self.mode == "now" and (self.at is not None or self.until is not None):
            raise ValueError("mode 'now' takes neither at nor until")
        if self.mode == "best_hour" and self.until is None:
            raise ValueError("mode 'best_hour' needs the end of its window (until)")
        if self.mode != "best_hour" and self.until is not None:
            raise ValueError("until goes with mode 'best_hour' only")
        return self


class Conversion(_Strict):
    event: str = Field("Order Completed", min_length=1, max_length=200)
    within: str = Field("3d", description="Counted when it happens within this time of the send.")
    value_property: str = Field("revenue", min_length=1, max_length=100)

    @field_validator("within")
    @classmethod
    def _within(cls, value: str) -> str:
        span = parse_duration(value)
        if span is None or not timedelta(minutes=1) <= span <= timedelta(days=90):
            raise ValueError("within is a duration between 1m and 90d, such as 3d or 12h")
        return value

    def window(self) -> timedelta:
        span = parse_duration(self.within)
        assert span is not None
        return span


class Definition(_Strict):
    audience: Audience
    channels: list[ChannelMessage] | None = Field(
        None,
        min_length=1,
        max_length=len(CHANNELS),
        description="The message: a channel order with fallback.",
    )
    variants: list[Variant] | None = Field(None, min_length=2, max_length=10, description="…or A/B variants.")
    holdout: float = Field(0, ge=0, le=50, description="Percent of the audience kept out, to compare with.")
    schedule: Schedule = Field(default_factory=lambda: Schedule.model_validate({}))
    conversion: Conversion = Field(default_factory=lambda: Conversion.model_validate({}))

    @model_validator(mode="after")
    def _message(self) -> Definition:
        if (self.channels is None) == (self.variants is None):
            raise ValueError("give the message as channels (one message) or as variants (A/B)")
        if self.variants is not None and len({v.key for v in self.variants}) != len(self.variants):
            raise ValueError("variant keys must differ")
        if self.channels is not None and len({c.channel for c in self.channels}) != len(self.channels):
            raise ValueError("each channel comes once in a channel order")
        return self

    def all_variants(self) -> list[Variant]:
        if self.variants is not None:
            return self.variants
        assert self.channels is not None
        return [Variant(key="main", weight=1.0, channels=self.channels)]


def parse_definition(source: Any) -> Definition:
    """A definition from JSON data; InvalidInput naming the field on any error."""
    if not isinstance(source, dict):
        raise InvalidInput("a broadcast definition is a JSON object", field="definition")
    try:
        return Definition.model_validate(source)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidInput(f"{where}: {message}" if where else message, field=where or "definition") from None
