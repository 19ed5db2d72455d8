"""Tables of referrals."""

from __future__ import annotations
