"""First-contact SLAs: the escalation ladder on exact deadlines and speed-to-lead measurement."""
