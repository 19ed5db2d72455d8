"""Coupons: templates, issued coupons, redemptions."""
