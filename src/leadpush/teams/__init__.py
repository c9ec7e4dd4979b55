"""Teams as rows: a name people and transfer rules point at, and its managers (its users with role manager)."""
