"""Computed properties: per-user aggregates maintained incrementally as events are resolved."""
