"""Console accounts: users with argon2-hashed passwords, roles per workspace, sessions, the audit log."""
