"""Lead intake: lead sources, their integration tokens and signing secrets, and the inbound endpoints."""
