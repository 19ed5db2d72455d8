"""Coupon codes: random, unguessable and easy to type; what a customer types is normalised before lookup.

A unique code is 12 characters of Crockford's base 32 (no I, L, O or U: nothing to misread), 60 random
bits, shown in groups of four (``K7QF-9MZT-2XHD``). Typed codes ignore case, spaces and dashes, and read
O as 0 and I or L as 1. A shared code is the operator's own word (``WELCOME10``), kept upper-case
without spaces or dashes.
"""

from __future__ import annotations

import re
import secrets

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
LENGTH = 12
_MISREAD = str.maketrans({"O": "0", "I": "1", "L": "1"})
SHARED_CODE = re.compile(r"^[A-Z0-9_]{3,32}$")


def new_unique_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))


def typed(code: str) -> str:
    """A typed code as stored: upper-case, without spaces or dashes."""
    return re.sub(r"[\s\-]", "", code).upper()


def as_unique(code: str) -> str:
    """A typed code read as a unique code, the misread letters put right."""
    return typed(code).translate(_MISREAD)


def shown_unique(code: str) -> str:
    """A unique code as a customer sees it: in groups of four."""
    return "-".join(code[i : i + 4] for i in range(0, len(code), 4))
