"""Advisors (导购): assignments of customers, follow-up tasks, notifications."""
