"""Table of message templates and their locale variants."""
