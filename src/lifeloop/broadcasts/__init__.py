"""Broadcasts (群发): one message to an audience, now, at a set time or at each user's best hour."""
