"""Tables of coupons."""

from __future__ import annotations
