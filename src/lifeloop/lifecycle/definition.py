"""Lifecycle models as data: YAML with ordered stages, each entered when its condition holds.

A model is validated completely on load — structure, unique keys, names in zh-CN and en, and every
condition parsed by the condition language — so a broken model never becomes active. Stages are
tried top to bottom and the first whose condition holds is the profile's stage; a profile that
matches none is outside the model (no stage). Time rules are conditions on time
(``days_since(last_interaction) >= 30``): the sweep re-evaluates them without any new event.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from lifeloop.conditions import Condition, ConditionSyntaxError, ProfileView, evaluate, parse
from lifeloop.errors import InvalidInput

PRESETS_DIR = Path(__file__).with_name("presets")
LOCALES = ("zh-CN", "en")
_KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")


@dataclass(frozen=True, slots=True)
class Stage:
    key: str
    names: dict[str, str]
    source: str  # the condition as written
    condition: Condition
    emit_on_enter: str | None = None  # an extra event when a profile enters (e.g. Churn Risk Detected)

    def name(self, locale: str) -> str:
        return self.names.get(locale) or self.names["en"]


@dataclass(frozen=True, slots=True)
class LifecycleModel:
    key: str
    version: int
    names: dict[str, str]
    description: dict[str, str]
    stages: tuple[Stage, ...]
    source: str  # the YAML text, stored with each version

    def stage(self, key: str) -> Stage:
        for stage in self.stages:
            if stage.key == key:
                return stage
        raise KeyError(key)

    def stage_for(self, view: ProfileView) -> Stage | None:
        """The first stage whose condition holds for ``view``, or None (outside this model)."""
        for stage in self.stages:
            if evaluate(stage.condition, view):
                return stage
        return None


def _names(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or any(not isinstance(value.get(loc), str) for loc in LOCALES):
        raise InvalidInput(f"{where} needs a name in each of {', '.join(LOCALES)}", field=where)
    return {str(k): str(v) for k, v in value.items()}


def _key(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _KEY.fullmatch(value):
        raise InvalidInput(
            f"{where} must be lower-case letters, digits and _ (starting with a letter), got {value!r}",
            field=where,
        )
    return value


def load_model(text: str) -> LifecycleModel:
    """Parse and validate a model's YAML; InvalidInput names the field at fault."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise InvalidInput(f"the model is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise InvalidInput("a lifecycle model is a YAML mapping with key, version, name and stages")
    key = _key(data.get("key"), "key")
    version = data.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InvalidInput("version must be a positive whole number", field="version")
    raw_stages = data.get("stages")
    if not isinstance(raw_stages, list) or not raw_stages:
        raise InvalidInput("stages must be a non-empty list, first match wins", field="stages")
    stages: list[Stage] = []
    for index, raw in enumerate(raw_stages):
        where = f"stages[{index}]"
        if not isinstance(raw, dict):
            raise InvalidInput(f"{where} must be a mapping with key, name and when", field=where)
        stage_key = _key(raw.get("key"), f"{where}.key")
        if any(s.key == stage_key for s in stages):
            raise InvalidInput(f"{where}.key {stage_key!r} is used twice", field=f"{where}.key")
        source = raw.get("when")
        if isinstance(source, bool):
            source = "true" if source else "false"
        if not isinstance(source, str) or not source.strip():
            raise InvalidInput(f"{where}.when must be a condition", field=f"{where}.when")
        try:
            condition = parse(source)
        except ConditionSyntaxError as error:
            raise InvalidInput(
                f"{where}.when ({stage_key}): {error.message}", field=f"{where}.when"
            ) from None
        on_enter = raw.get("on_enter") or {}
        emit = on_enter.get("emit") if isinstance(on_enter, dict) else None
        if emit is not None and (not isinstance(emit, str) or not emit.strip() or len(emit) > 255):
            raise InvalidInput(f"{where}.on_enter.emit must be an event name", field=f"{where}.on_enter.emit")
        stages.append(
            Stage(
                key=stage_key,
                names=_names(raw.get("name"), f"{where}.name"),
                source=source.strip(),
                condition=condition,
                emit_on_enter=emit,
            )
        )
    description = data.get("description") or {}
    if not isinstance(description, dict):
        raise InvalidInput("description must map locales to text", field="description")
    return LifecycleModel(
        key=key,
        version=version,
        names=_names(data.get("name"), "name"),
        description={str(k): str(v) for k, v in description.items()},
        stages=tuple(stages),
        source=text,
    )


def preset_keys() -> list[str]:
    return sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))


@cache
def preset(key: str) -> LifecycleModel:
    """A shipped preset: ``line`` (seed 000), ``wecom`` (001), ``aarrr`` (002), ``mall`` (004)."""
    path = PRESETS_DIR / f"{key}.yaml"
    if not path.is_file():
        raise InvalidInput(f"no preset {key!r}; presets are {', '.join(preset_keys())}", field="preset")
    return load_model(path.read_text(encoding="utf-8"))
