"""Tables of coupons: templates (the terms), issued coupons (one per customer and issue), redemptions.

A template's terms (kind, value, threshold, max discount, gift, code mode) never change once made, so an
issued coupon reads them from its template; what can change (validity, limits) applies to later issues,
each coupon keeping its own ``starts_at`` / ``expires_at``.
"""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Table,
    UniqueConstraint,
)

from lifeloop.store.schema import Id, UTCDateTime, metadata

KINDS = ("fixed", "percent", "threshold", "free_shipping", "gift")
CODE_MODES = ("unique", "shared")
TEMPLATE_STATUSES = ("active", "archived")
COUPON_STATUSES = ("issued", "redeemed", "expired")

# Amounts of money in the workspace's currency, to the cent; read back as float.
Money = Numeric(14, 2, asdecimal=False)

coupon_templates = Table(
    "coupon_templates",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("value", Money),  # fixed / threshold: the amount off; percent: the percentage off (15 = 15 %)
    Column("max_discount", Money),  # percent: the most it takes off
    Column("threshold", Money),  # the order total it needs (满减's threshold; optional for other kinds)
    Column("gift", String(200)),  # gift: the gift item's name
    Column("valid_from", UTCDateTime),  # absolute validity
    Column("valid_until", UTCDateTime),
    Column("valid_days", Integer),  # relative validity: N days from issue (in the workspace's zone)
    Column("starts_after_days", Integer),  # relative validity: starting M days after issue
    Column("per_user_limit", Integer),  # issues per customer
    Column("total_limit", Integer),  # issues in all
    Column("issued_count", Integer, nullable=False),  # issues so far: the total limit's counter
    Column("code_mode", String(8), nullable=False),
    Column("shared_code", String(32)),  # shared: the one code everyone types (normalised)
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("workspace_id", "key"),
    UniqueConstraint("workspace_id", "shared_code"),
    CheckConstraint("kind IN ('fixed', 'percent', 'threshold', 'free_shipping', 'gift')", name="kind"),
    CheckConstraint("code_mode IN ('unique', 'shared')", name="code_mode"),
    CheckConstraint("status IN ('active', 'archived')", name="status"),
    CheckConstraint("total_limit IS NULL OR issued_count <= total_limit", name="total_limit"),
)

coupons = Table(
    "coupons",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("template_id", Id, ForeignKey("coupon_templates.id", ondelete="CASCADE"), nullable=False),
    Column("profile_id", Id, nullable=False),
    Column("unique_code", String(32)),  # unique mode: this coupon's own code (shared: the template's)
    Column("status", String(16), nullable=False),
    Column("issue_key", String(255), nullable=False),  # the issuing request's idempotency key
    Column("source", String(64), nullable=False),  # api, cli, journey, referral…
    Column("issued_at", UTCDateTime, nullable=False),
    Column("starts_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime),  # none: valid until redeemed
    Column("redeemed_at", UTCDateTime),
    Column("expired_at", UTCDateTime),
    UniqueConstraint("workspace_id", "issue_key"),
    UniqueConstraint("workspace_id", "unique_code"),
    CheckConstraint("status IN ('issued', 'redeemed', 'expired')", name="status"),
    Index(None, "workspace_id", "profile_id", "template_id"),
    Index(None, "status", "expires_at"),  # the expiry sweep
)

coupon_redemptions = Table(
    "coupon_redemptions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    # One row per coupon, ever: the second redemption of a coupon cannot be stored.
    Column("coupon_id", Id, ForeignKey("coupons.id", ondelete="CASCADE"), nullable=False, unique=True),
    Column("key", String(255), nullable=False),  # the redeeming request's idempotency key
    Column("profile_id", Id, nullable=False),
    Column("order_id", String(255)),
    Column("order_total", Money),
    Column("discount", Money),  # what the coupon took off, when it is an amount
    Column("redeemed_at", UTCDateTime, nullable=False),
    UniqueConstraint("workspace_id", "key"),
)
