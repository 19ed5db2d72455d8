"""Tables of points."""

from __future__ import annotations
