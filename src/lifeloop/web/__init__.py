"""The HTTP surface: ingest (/v1), REST API (/api/v1), health, and later the console."""
