"""Member tiers over a rolling window, benefits, reviews, member days."""
