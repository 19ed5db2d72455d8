"""Lifecycle models, stage assignment and sweeps."""
