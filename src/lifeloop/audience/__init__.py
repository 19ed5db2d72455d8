"""Tags and segments."""
