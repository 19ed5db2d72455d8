"""Outbound messaging: templates, contact policy, outbox and channel adapters."""
