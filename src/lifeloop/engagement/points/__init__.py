"""Points (FIFO lots, spends, expiry), daily check-in with streaks, new-user tasks."""
