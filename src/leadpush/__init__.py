"""leadpush: lead assignment and notification backend for a CRM."""

__version__ = "0.1.0"
