"""Segment-compatible ingest: validation, de-duplication, clock-skew correction, storage."""
