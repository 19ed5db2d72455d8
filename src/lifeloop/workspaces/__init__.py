"""Workspaces (one per brand), ingest sources with write keys, and API tokens."""
