"""Coupons: templates, issued coupons and redemptions.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from lifeloop.store.schema import Id, UTCDateTime

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

Money = sa.Numeric(14, 2, asdecimal=False)


def _workspace() -> sa.Column:
    return sa.Column("workspace_id", Id, sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "coupon_templates",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        _workspace(),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("value", Money),
        sa.Column("max_discount", Money),
        sa.Column("threshold", Money),
        sa.Column("gift", sa.String(200)),
        sa.Column("valid_from", UTCDateTime()),
        sa.Column("valid_until", UTCDateTime()),
        sa.Column("valid_days", sa.Integer()),
        sa.Column("starts_after_days", sa.Integer()),
        sa.Column("per_user_limit", sa.Integer()),
        sa.Column("total_limit", sa.Integer()),
        sa.Column("issued_count", sa.Integer(), nullable=False),
        sa.Column("code_mode", sa.String(8), nullable=False),
        sa.Column("shared_code", sa.String(32)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("workspace_id", "key", name="uq_coupon_templates_workspace_id_key"),
        sa.UniqueConstraint(
            "workspace_id", "shared_code", name="uq_coupon_templates_workspace_id_shared_code"
        ),
        sa.CheckConstraint(
            "kind IN ('fixed', 'percent', 'threshold', 'free_shipping', 'gift')",
            name="ck_coupon_templates_kind",
        ),
        sa.CheckConstraint("code_mode IN ('unique', 'shared')", name="ck_coupon_templates_code_mode"),
        sa.CheckConstraint("status IN ('active', 'archived')", name="ck_coupon_templates_status"),
        sa.CheckConstraint(
            "total_limit IS NULL OR issued_count <= total_limit", name="ck_coupon_templates_total_limit"
        ),
    )
    op.create_table(
        "coupons",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        _workspace(),
        sa.Column(
            "template_id", Id, sa.ForeignKey("coupon_templates.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("profile_id", Id, nullable=False),
        sa.Column("unique_code", sa.String(32)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("issue_key", sa.String(255), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("issued_at", UTCDateTime(), nullable=False),
        sa.Column("starts_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime()),
        sa.Column("redeemed_at", UTCDateTime()),
        sa.Column("expired_at", UTCDateTime()),
        sa.UniqueConstraint("workspace_id", "issue_key", name="uq_coupons_workspace_id_issue_key"),
        sa.UniqueConstraint("workspace_id", "unique_code", name="uq_coupons_workspace_id_unique_code"),
        sa.CheckConstraint("status IN ('issued', 'redeemed', 'expired')", name="ck_coupons_status"),
    )
    op.create_index(
        "ix_coupons_workspace_id_profile_id_template_id",
        "coupons",
        ["workspace_id", "profile_id", "template_id"],
    )
    op.create_index("ix_coupons_status_expires_at", "coupons", ["status", "expires_at"])
    op.create_table(
        "coupon_redemptions",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        _workspace(),
        sa.Column("coupon_id", Id, sa.ForeignKey("coupons.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("profile_id", Id, nullable=False),
        sa.Column("order_id", sa.String(255)),
        sa.Column("order_total", Money),
        sa.Column("discount", Money),
        sa.Column("redeemed_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("coupon_id", name="uq_coupon_redemptions_coupon_id"),
        sa.UniqueConstraint("workspace_id", "key", name="uq_coupon_redemptions_workspace_id_key"),
    )


def downgrade() -> None:
    op.drop_table("coupon_redemptions")
    op.drop_index("ix_coupons_status_expires_at", "coupons")
    op.drop_index("ix_coupons_workspace_id_profile_id_template_id", "coupons")
    op.drop_table("coupons")
    op.drop_table("coupon_templates")
