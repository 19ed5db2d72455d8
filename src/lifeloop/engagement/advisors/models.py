"""Tables of advisors."""

from __future__ import annotations
