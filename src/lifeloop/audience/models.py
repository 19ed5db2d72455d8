"""Tables of tags and segments (memberships read by conditions)."""
