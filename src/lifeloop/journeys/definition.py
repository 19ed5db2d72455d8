"""Journey definitions as data: a trigger, re-entry rules, a goal and a list of steps.

A definition is YAML or JSON, validated by the Pydantic models below (their JSON Schema is published at
``GET /api/v1/journeys/schema`` and in ``docs/journey.schema.json``) and then checked as a whole: step
keys unique, every step a ``next`` / branch names exists, every condition parses, every duration and
cron expression reads. Errors name the step and the field, as ``steps[2] (wait_reply).timeout: …``.
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from functools import cached_property
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lifeloop.conditions import Condition, ConditionSyntaxError, parse
from lifeloop.errors import InvalidInput

KEY = r"^[a-z][a-z0-9_]{0,63}$"
_DURATION = re.compile(r"^(-)?(\d{1,6})(s|m|h|d|w)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Stored events the non-event triggers listen to (lifecycle, audience), with the properties they test.
STAGE_ENTERED, STAGE_EXITED = "Lifecycle Stage Entered", "Lifecycle Stage Exited"
SEGMENT_ENTERED, SEGMENT_EXITED = "Segment Entered", "Segment Exited"
TAG_ADDED, TAG_REMOVED = "Tag Added", "Tag Removed"
JOURNEY_EVENTS = ("Journey Entered", "Journey Step Completed", "Journey Exited", "Journey Converted")
MAX_STEPS = 200


def parse_duration(text: str, *, field: str = "duration", signed: bool = False) -> timedelta:
    """``"90s"``, ``"15m"``, ``"1h"``, ``"7d"``, ``"2w"`` (and ``"-3d"`` where ``signed``)."""
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if match is None or (match.group(1) and not signed):
        example = '"-3d" or "2d"' if signed else '"30m", "1h", "7d" or "2w"'
        raise ValueError(f"{field} must be a duration such as {example}, not {text!r}")
    seconds = int(match.group(2)) * _UNITS[match.group(3)]
    return timedelta(seconds=-seconds if match.group(1) else seconds)


def parse_clock(text: str) -> time:
    try:
        hours, minutes = text.split(":")
        return time(int(hours), int(minutes))
    except (ValueError, AttributeError):
        raise ValueError(f'a local time of day is written "HH:MM", such as "09:00", not {text!r}') from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _duration(value: str) -> str:
    parse_duration(value)
    return value


def _condition(value: str, *, event_properties: bool = True) -> str:
    try:
        parse(value, field=None, event_properties=event_properties)
    except ConditionSyntaxError as error:
        raise ValueError(error.message) from None
    return value


Duration = Annotated[str, Field(description='A duration: "30m", "1h", "7d", "2w".')]
StepKey = Annotated[str, Field(pattern=KEY, description="A step's key: lower-case letters, digits, _")]


# --- triggers ------------------------------------------------------------------------------------


class _Trigger(_Strict):
    condition: str | None = Field(
        None, description="Only profiles that also meet this condition enter (the condition language)."
    )

    @field_validator("condition")
    @classmethod
    def _check_condition(cls, value: str | None) -> str | None:
        return None if value is None else _condition(value)


class EventTrigger(_Trigger):
    kind: Literal["event"]
    event: str = Field(min_length=1, max_length=200, description="The event name, e.g. Checkout Started.")
    where: str | None = Field(None, description='A filter on the event, e.g. property.channel == "line".')

    @field_validator("where")
    @classmethod
    def _check_where(cls, value: str | None) -> str | None:
        return None if value is None else _condition(value)


class StageTrigger(_Trigger):
    kind: Literal["stage_entered", "stage_left"]
    model: str = Field(min_length=1, max_length=64)
    stage: str = Field(min_length=1, max_length=64)


class SegmentTrigger(_Trigger):
    kind: Literal["segment_entered", "segment_left"]
    segment: str = Field(min_length=1, max_length=64)


class TagTrigger(_Trigger):
    kind: Literal["tag_added", "tag_removed"]
    tag: str = Field(min_length=1, max_length=128)


class DateTrigger(_Trigger):
    kind: Literal["date"]
    trait: str = Field(min_length=1, max_length=64, description="A date trait: birthday, joined_at, …")
    offset: str = Field("0d", description='Days before (negative) or after the date: "-3d", "0d", "7d".')
    at: str = Field("09:00", description="Local time of day in the customer's time zone.")
    repeat: Literal["yearly", "once"] = Field(
        "yearly", description="yearly: every year on the date (birthday); once: the date itself (expiry)."
    )

    @field_validator("offset")
    @classmethod
    def _check_offset(cls, value: str) -> str:
        if parse_duration(value, field="offset", signed=True) % timedelta(days=1):
            raise ValueError('offset counts whole days, such as "-3d"')
        return value

    @field_validator("at")
    @classmethod
    def _check_at(cls, value: str) -> str:
        parse_clock(value)
        return value


class ScheduleTrigger(_Trigger):
    kind: Literal["schedule"]
    cron: str = Field(description='Cron in the workspace\'s time zone, e.g. "0 10 1 * *" (10:00 on the 1st).')
    segment: str | None = Field(None, description="Whose members enter; without it, everyone.")

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, value: str) -> str:
        from croniter import croniter

        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a cron expression (minute hour day month weekday)")
        return value


class ManualTrigger(_Trigger):
    kind: Literal["manual"]


Trigger = Annotated[
    EventTrigger | StageTrigger | SegmentTrigger | TagTrigger | DateTrigger | ScheduleTrigger | ManualTrigger,
    Field(discriminator="kind"),
]


class Reentry(_Strict):
    mode: Literal["once", "once_per_period", "always", "not_while_inside"] = Field(
        "not_while_inside",
        description="once: ever; once_per_period: at most once per period; always; "
        "not_while_inside: again only after leaving.",
    )
    period: str | None = Field(None, description="With once_per_period: e.g. 30d.")

    @model_validator(mode="after")
    def _period(self) -> Reentry:
        if self.mode == "once_per_period":
            if self.period is None:
                raise ValueError("once_per_period needs a period, such as 30d")
            parse_duration(self.period, field="period")
        elif self.period is not None:
            raise ValueError("period goes with mode once_per_period only")
        return self


class Goal(_Strict):
    event: str = Field(
        min_length=1, max_length=200, description="The conversion event, e.g. Order Completed."
    )
    within: str = Field("7d", description="Counted when it happens within this time of entering.")
    where: str | None = None
    value_property: str = Field("revenue", description="The event property summed as revenue.")
    exit: bool = Field(True, description="Leave the journey when the goal is reached.")

    @field_validator("within")
    @classmethod
    def _check_within(cls, value: str) -> str:
        return _duration(value)

    @field_validator("where")
    @classmethod
    def _check_where(cls, value: str | None) -> str | None:
        return None if value is None else _condition(value)


# --- steps ---------------------------------------------------------------------------------------


class _Step(_Strict):
    key: StepKey
    next: StepKey | None = Field(None, description="The step after this one; by default the one below it.")


class WaitStep(_Step):
    type: Literal["wait"]
    duration: str | None = Field(None, description='Wait this long: "1h", "24h", "7d".')
    until_time: str | None = Field(None, description='Until the next "HH:MM" in the customer\'s time zone.')
    until_trait: str | None = Field(None, description="Until the date or time held in this trait.")
    offset: str | None = Field(None, description='With until_trait: e.g. "-1d" (the day before).')
    at: str | None = Field(None, description='With until_trait: the local time of day, e.g. "09:00".')

    @model_validator(mode="after")
    def _one_mode(self) -> WaitStep:
        modes = [m for m in ("duration", "until_time", "until_trait") if getattr(self, m) is not None]
        if len(modes) != 1:
            raise ValueError("a wait takes exactly one of duration, until_time or until_trait")
        if self.duration is not None:
            parse_duration(self.duration)
        if self.until_time is not None:
            parse_clock(self.until_time)
        if (self.offset is not None or self.at is not None) and self.until_trait is None:
            raise ValueError("offset and at go with until_trait")
        if self.offset is not None:
            parse_duration(self.offset, field="offset", signed=True)
        if self.at is not None:
            parse_clock(self.at)
        return self


class WaitForStep(_Step):
    type: Literal["wait_for"]
    event: str = Field(min_length=1, max_length=200)
    timeout: str = Field(description="How long to wait before taking on_timeout.")
    where: str | None = Field(None, description="A filter on the awaited event (property.…).")
    match: dict[str, str] = Field(
        default_factory=dict,
        description="Awaited event property → trigger event property that must be equal "
        "(the order must belong to the same cart: {cart_id: cart_id}).",
    )
    on_event: StepKey | None = Field(None, description="Where to go when the event comes; default next.")
    on_timeout: StepKey | None = Field(None, description="Where to go on timeout; default next.")

    @field_validator("timeout")
    @classmethod
    def _check_timeout(cls, value: str) -> str:
        return _duration(value)

    @field_validator("where")
    @classmethod
    def _check_where(cls, value: str | None) -> str | None:
        return None if value is None else _condition(value)


class BranchStep(_Step):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    type: Literal["branch"]
    condition: str = Field(
        description="Traits, computed values, stage, tags; property.… reads the trigger event."
    )
    then: StepKey | None = Field(None, description="When true; default next.")
    otherwise: StepKey | None = Field(None, alias="else", description="When false; default: leave.")

    @field_validator("condition")
    @classmethod
    def _check_condition(cls, value: str) -> str:
        return _condition(value)


class Arm(_Strict):
    name: str = Field(pattern=KEY)
    weight: float = Field(gt=0)
    next: StepKey


class SplitStep(_Step):
    type: Literal["split"]
    arms: list[Arm] = Field(min_length=1, max_length=10)
    holdout: float = Field(0, ge=0, lt=100, description="Percent kept out as the control group.")
    seed: str = Field("", description="Changes the assignment; the same seed keeps it sticky.")

    @model_validator(mode="after")
    def _unique(self) -> SplitStep:
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names) or "holdout" in names:
            raise ValueError("arm names must be unique and not 'holdout'")
        return self


class SendStep(_Step):
    type: Literal["send"]
    channel: str = Field(
        description="line, wecom, wechat, email, sms, webhook — or best: the first of templates' "
        "channels the customer can be reached on."
    )
    template: str | None = Field(None, description="The template key (with a fixed channel).")
    templates: dict[str, str] = Field(
        default_factory=dict, description="With channel best: channel → template key, in order of preference."
    )
    transactional: bool = False

    @model_validator(mode="after")
    def _templates(self) -> SendStep:
        if self.channel == "best":
            if not self.templates or self.template is not None:
                raise ValueError("channel best takes templates: {channel: template key, …} in order")
        elif self.template is None or self.templates:
            raise ValueError("a send step takes a template (or channel best with templates)")
        return self


class TagStep(_Step):
    type: Literal["add_tag", "remove_tag"]
    tag: str = Field(min_length=1, max_length=128)
    expires: str | None = Field(None, description="With add_tag: the tag lapses after this long.")

    @field_validator("expires")
    @classmethod
    def _check_expires(cls, value: str | None) -> str | None:
        return None if value is None else _duration(value)


class SetTraitStep(_Step):
    type: Literal["set_trait"]
    trait: str = Field(min_length=1, max_length=64)
    value: Any = Field(description="The value; null removes the trait.")


class WebhookStep(_Step):
    type: Literal["webhook"]
    url: str = Field(pattern=r"^https?://", max_length=500)
    body: dict[str, Any] = Field(default_factory=dict, description="Extra JSON fields sent with the call.")


class RichMenuStep(_Step):
    type: Literal["line_rich_menu"]
    rich_menu_id: str = Field(min_length=1, max_length=100, description="LINE rich menu id (richmenu-…).")


class IssueCouponStep(_Step):
    type: Literal["issue_coupon"]
    template: str = Field(min_length=1, max_length=64, description="The coupon template's key.")


class AwardPointsStep(_Step):
    type: Literal["award_points"]
    points: int = Field(gt=0, le=1_000_000)
    reason: str = Field("journey", min_length=1, max_length=64, description="Shown in the points history.")
    expires: str | None = Field(None, description='The points lapse after this long ("365d"); default: '
                                "the points programme's validity.")  # fmt: skip

    @field_validator("expires")
    @classmethod
    def _check_expires(cls, value: str | None) -> str | None:
        return None if value is None else _duration(value)


class AdvisorTaskStep(_Step):
    type: Literal["advisor_task"]
    title: str = Field(min_length=1, max_length=200, description="What the advisor is asked to do.")
    kind: str = Field("follow_up", pattern=KEY)
    due: str | None = Field(None, description='Due this long after the step ("24h"); default: no due time.')
    note: str | None = Field(None, max_length=2000)

    @field_validator("due")
    @classmethod
    def _check_due(cls, value: str | None) -> str | None:
        return None if value is None else _duration(value)


class ExitStep(_Step):
    type: Literal["exit"]
    reason: str = Field("exit_step", pattern=KEY)


Step = Annotated[
    WaitStep
    | WaitForStep
    | BranchStep
    | SplitStep
    | SendStep
    | TagStep
    | SetTraitStep
    | WebhookStep
    | RichMenuStep
    | IssueCouponStep
    | AwardPointsStep
    | AdvisorTaskStep
    | ExitStep,
    Field(discriminator="type"),
]


class Definition(_Strict):
    """A journey: when customers enter, what happens to them, and what counts as success."""

    key: str = Field(pattern=KEY)
    name: dict[str, str] = Field(description='{"zh-CN": …, "en": …}')
    description: dict[str, str] = Field(default_factory=dict)
    trigger: Trigger
    reentry: Reentry = Field(default_factory=Reentry)  # type: ignore[arg-type]
    goal: Goal | None = None
    steps: list[Step] = Field(min_length=1, max_length=MAX_STEPS)

    @field_validator("name")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        missing = [lang for lang in ("zh-CN", "en") if not value.get(lang)]
        if missing:
            raise ValueError(f"a name in {' and '.join(missing)} is needed")
        return value

    @model_validator(mode="after")
    def _graph(self) -> Definition:
        keys = [s.key for s in self.steps]
        seen: set[str] = set()
        for index, step in enumerate(self.steps):
            if step.key in seen:
                raise _StepError(index, step.key, "key", f"step key {step.key!r} is used twice")
            seen.add(step.key)
        for index, step in enumerate(self.steps):
            for field_name, target in _targets(step):
                if target is not None and target not in keys:
                    raise _StepError(index, step.key, field_name, f"no step {target!r} in this journey")
        return self

    @cached_property
    def by_key(self) -> dict[str, Any]:
        return {s.key: s for s in self.steps}

    @cached_property
    def following(self) -> dict[str, str | None]:
        """Each step's default next step: the one below it (None after the last)."""
        keys = [s.key for s in self.steps]
        return {k: (keys[i + 1] if i + 1 < len(keys) else None) for i, k in enumerate(keys)}

    def next_of(self, step: Any) -> str | None:
        return step.next if step.next is not None else self.following[step.key]

    @cached_property
    def conditions(self) -> dict[str, Condition]:
        """Every condition of the definition, parsed once (by where it stands)."""
        found: dict[str, Condition] = {}
        if self.trigger.condition:
            found["trigger.condition"] = parse(self.trigger.condition, event_properties=True)
        if isinstance(self.trigger, EventTrigger) and self.trigger.where:
            found["trigger.where"] = parse(self.trigger.where, event_properties=True)
        if self.goal is not None and self.goal.where:
            found["goal.where"] = parse(self.goal.where, event_properties=True)
        for step in self.steps:
            if isinstance(step, BranchStep):
                found[step.key] = parse(step.condition, event_properties=True)
            elif isinstance(step, WaitForStep) and step.where:
                found[step.key] = parse(step.where, event_properties=True)
        return found

    def trigger_event(self) -> tuple[str | None, dict[str, Any]]:
        """The stored event a trigger listens to, and the properties it must carry."""
        t = self.trigger
        if isinstance(t, EventTrigger):
            return t.event, {}
        if isinstance(t, StageTrigger):
            name = STAGE_ENTERED if t.kind == "stage_entered" else STAGE_EXITED
            return name, {"model": t.model, "stage": t.stage}
        if isinstance(t, SegmentTrigger):
            return (SEGMENT_ENTERED if t.kind == "segment_entered" else SEGMENT_EXITED), {
                "segment": t.segment
            }
        if isinstance(t, TagTrigger):
            return (TAG_ADDED if t.kind == "tag_added" else TAG_REMOVED), {"tag": t.tag}
        return None, {}

    def templates(self) -> list[tuple[str, str, str]]:
        """(step key, channel, template key) of every send step."""
        found = []
        for step in self.steps:
            if isinstance(step, SendStep):
                pairs = step.templates.items() if step.channel == "best" else [(step.channel, step.template)]
                found += [(step.key, channel, str(key)) for channel, key in pairs]
        return found


def _targets(step: Any) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = [("next", step.next)]
    if isinstance(step, WaitForStep):
        found += [("on_event", step.on_event), ("on_timeout", step.on_timeout)]
    elif isinstance(step, BranchStep):
        found += [("then", step.then), ("else", step.otherwise)]
    elif isinstance(step, SplitStep):
        found += [(f"arms[{i}].next", arm.next) for i, arm in enumerate(step.arms)]
    return found


class _StepError(ValueError):
    def __init__(self, index: int, key: str, field: str, message: str):
        super().__init__(message)
        self.where = f"steps[{index}] ({key}).{field}"
        self.message = message


def _location(data: Any, loc: tuple[Any, ...]) -> str:
    """A readable path for a validation error: steps[2] (wait_reply).timeout."""
    parts: list[str] = []
    node = data
    i = 0
    while i < len(loc):
        item = loc[i]
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1] if parts else ''}[{item}]"]
            node = node[item] if isinstance(node, list) and item < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("key"), str) and len(parts) == 1:
                parts[-1] += f" ({node['key']})"
        else:
            # Pydantic names the union member it tried (the step's type); the reader knows it already.
            if isinstance(node, dict) and item == node.get("type", node.get("kind")) and item not in node:
                i += 1
                continue
            parts.append(str(item))
            node = node.get(item) if isinstance(node, dict) else None
        i += 1
    return ".".join(parts)


def load_definition(source: str | dict[str, Any]) -> Definition:
    """Parse YAML / JSON text or a mapping into a checked definition; InvalidInput names the field."""
    if isinstance(source, str):
        try:
            data = yaml.safe_load(source)
        except yaml.YAMLError as error:
            raise InvalidInput(f"not valid YAML or JSON: {error}", field="definition") from None
    else:
        data = source
    if not isinstance(data, dict):
        raise InvalidInput(
            "a journey definition is a mapping with key, name, trigger and steps", field="definition"
        )
    try:
        return Definition.model_validate(data)
    except ValidationError as error:
        errors = []
        for item in error.errors():
            ctx = item.get("ctx", {}).get("error")
            if isinstance(ctx, _StepError):
                errors.append({"field": ctx.where, "message": ctx.message})
                continue
            message = str(item["msg"]).removeprefix("Value error, ")
            errors.append({"field": _location(data, tuple(item["loc"])) or "definition", "message": message})
        first = errors[0]
        raise InvalidInput(
            f"{first['field']}: {first['message']}", field=first["field"], errors=errors
        ) from None


def json_schema() -> dict[str, Any]:
    """The published JSON Schema of a journey definition."""
    schema = Definition.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://lifeloop.dev/schemas/journey.json"
    return schema


def next_local(now: datetime, clock: time, tz: Any) -> datetime:
    """The first moment after ``now`` at which the clock in ``tz`` reads ``clock``."""
    from lifeloop.messaging.policy import at_local

    local_day = now.astimezone(tz).date()
    for add in range(3):
        moment = at_local(local_day + timedelta(days=add), clock, tz)
        if moment > now:
            return moment
    raise AssertionError("a local time recurs within three days")
