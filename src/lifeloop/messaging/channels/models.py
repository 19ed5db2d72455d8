"""Table of per-workspace channel configurations (credentials encrypted at rest)."""
