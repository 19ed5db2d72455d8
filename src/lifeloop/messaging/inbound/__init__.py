"""Inbound channel webhooks (LINE, WeCom, e-mail tracking) turned into events."""
