"""Profiles, identities linked to them, and the record of merges."""
