"""Bearer tokens as stored: random strings kept only as SHA-256 hashes, told apart by their first characters."""

from __future__ import annotations

import hashlib
import secrets

# API tokens (for systems, no expiry) and sessions (for people, expiring) look alike but for their prefix.
TOKEN_PREFIX = "lp_"
SESSION_PREFIX = "lps_"
# A lead source's intake token (leadpush.intake): valid only for the inbound endpoints, never for the API.
INTAKE_PREFIX = "lpi_"
# How many of a token's first characters are stored, so that people can tell their tokens apart.
SHOWN_CHARS = 8


def new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    # Tokens are 256-bit random strings, so a plain SHA-256 is enough (no password stretching needed).
    return hashlib.sha256(token.encode()).hexdigest()
