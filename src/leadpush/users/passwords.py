"""Passwords: hashing and checking them (argon2 through pwdlib, never by hand) and the password policy."""

from __future__ import annotations

from functools import cache

from pwdlib import PasswordHash

from leadpush.errors import ApiError

MIN_LENGTH = 8
MAX_LENGTH = 128


@cache
def _hasher() -> PasswordHash:
    return PasswordHash.recommended()


@cache
def _dummy_hash() -> str:
    # Checked when a login name is unknown or has no password, so that such an attempt costs the same time
    # as a wrong password and its answer says nothing about which login names exist.
    return _hasher().hash("leadpush: no such account")


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(password: str, stored: str | None) -> tuple[bool, str | None]:
    """Whether `password` matches `stored` (a hash or None), and a new hash when the stored one uses outdated
    parameters. With no stored hash the check runs against a dummy hash (same time) and fails."""
    if stored is None:
        _hasher().verify(password, _dummy_hash())
        return False, None
    try:
        return _hasher().verify_and_update(password, stored)
    except Exception:  # noqa: BLE001 - a damaged or foreign hash signs nobody in
        return False, None


def check_policy(password: str, login_name: str | None) -> None:
    """422 `weak_password` with a message saying what to change."""
    if len(password) < MIN_LENGTH:
        raise ApiError(422, "weak_password", f"密码至少需要 {MIN_LENGTH} 个字符")
    if len(password) > MAX_LENGTH:
        raise ApiError(422, "weak_password", f"密码不能超过 {MAX_LENGTH} 个字符")
    if password.isdigit():
        raise ApiError(422, "weak_password", "密码不能全是数字，请加入字母或符号")
    if not password.strip():
        raise ApiError(422, "weak_password", "密码不能全是空格")
    if login_name is not None and password.strip().casefold() == login_name.strip().casefold():
        raise ApiError(422, "weak_password", "密码不能与登录名相同")
