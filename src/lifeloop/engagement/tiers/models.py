"""Tables of tiers."""

from __future__ import annotations
