"""The condition language: parser, real-time evaluator and SQL compiler (grammar: docs/conditions.md).

condition = parse('count("Page Viewed", within="14d") >= 3 and trait.city == "Taipei"')
evaluate(condition, StoredProfile(conn, workspace_id, profile_id, now=now))   # one profile
matching_profiles(conn, workspace_id, condition, now=now)                     # every profile
"""

from __future__ import annotations

from lifeloop.conditions.ast import Condition, to_text
from lifeloop.conditions.errors import ConditionSyntaxError
from lifeloop.conditions.evaluator import MISSING, ProfileView, evaluate
from lifeloop.conditions.parser import parse
from lifeloop.conditions.sql import compile_condition, matching_profiles
from lifeloop.conditions.views import MemoryProfile, StoredProfile

__all__ = [
    "MISSING",
    "Condition",
    "ConditionSyntaxError",
    "MemoryProfile",
    "ProfileView",
    "StoredProfile",
    "compile_condition",
    "evaluate",
    "matching_profiles",
    "parse",
    "to_text",
]
