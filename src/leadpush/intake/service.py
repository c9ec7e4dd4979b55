"""Lead sources: create, list, change, rotate and delete them; find the source an intake token or a form
webhook's key names; check a form webhook's signature."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from leadpush.errors import ApiError
from leadpush.intake.models import LeadSource
from leadpush.intake.schemas import LeadSourceCreate, LeadSourceOut
from leadpush.users.service import is_db_id
from leadpush.users.tokens import INTAKE_PREFIX, SHOWN_CHARS, hash_token, new_token

# The form webhook's signing secret: told apart from tokens by its prefix, never accepted as a bearer token.
SECRET_PREFIX = "lpsig_"


def source_out(row: LeadSource) -> LeadSourceOut:
    return LeadSourceOut.model_validate(row)


def not_found() -> ApiError:
    return ApiError(404, "source_not_found", "线索来源不存在")


def key_taken(key: str) -> ApiError:
    return ApiError(409, "source_key_taken", f"来源标识「{key}」已被其他线索来源使用")


def get_source(session: Session, source_id: int) -> LeadSource:
    row = session.get(LeadSource, source_id) if is_db_id(source_id) else None
    if row is None:
        raise not_found()
    return row


def list_sources(session: Session) -> list[LeadSource]:
    return list(session.scalars(select(LeadSource).order_by(LeadSource.id)))


def _check_key_free(session: Session, key: str, source_id: int | None = None) -> None:
    owner = session.scalar(select(LeadSource.id).where(LeadSource.key == key))
    if owner is not None and owner != source_id:
        raise key_taken(key)


def _new_credentials(row: LeadSource) -> tuple[str, str]:
    token = new_token(INTAKE_PREFIX)
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    row.token_hash = hash_token(token)
    row.token_prefix = token[:SHOWN_CHARS]
    row.signing_secret = secret
    return token, secret


def create_source(session: Session, body: LeadSourceCreate, now: datetime) -> tuple[LeadSource, str, str]:
    """A new source with its intake token and signing secret (returned once; the token kept only hashed)."""
    _check_key_free(session, body.key)
    row = LeadSource(
        key=body.key,
        name=body.name,
        field_mapping=dict(body.field_mapping),
        duplicate_policy=body.duplicate_policy,
        default_region=body.default_region,
        default_tags=list(body.default_tags),
        enabled=body.enabled,
        created_at=now,
        updated_at=now,
    )
    token, secret = _new_credentials(row)
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent create took the key
        raise key_taken(body.key) from exc
    return row, token, secret


def update_source(session: Session, source_id: int, changes: dict[str, Any], now: datetime) -> LeadSource:
    row = get_source(session, source_id)
    for key in ("key", "name", "duplicate_policy", "enabled"):
        if key in changes and changes[key] is None:
            raise ApiError(422, "validation_error", f"参数错误：{key} 不能为空")
    if changes.get("key"):
        _check_key_free(session, changes["key"], row.id)
    for key, value in changes.items():
        if value is None and key in ("field_mapping", "default_tags"):
            value = {} if key == "field_mapping" else []
        if value is None and key == "default_region":
            value = ""
        setattr(row, key, value)
    row.updated_at = now
    try:
        session.flush()
    except IntegrityError as exc:
        raise key_taken(str(changes.get("key"))) from exc
    return row


def rotate_source(session: Session, source_id: int, now: datetime) -> tuple[LeadSource, str, str]:
    """A new token and secret; the old ones stop working as soon as this commits."""
    row = get_source(session, source_id)
    token, secret = _new_credentials(row)
    row.rotated_at = now
    row.updated_at = now
    session.flush()
    return row, token, secret


def delete_source(session: Session, source_id: int) -> LeadSource:
    """Delete a source: its leads stay (their `source` label too), no longer tied to it."""
    row = get_source(session, source_id)
    session.delete(row)
    session.flush()
    return row


# --- who is calling -------------------------------------------------------------------------------------------


def source_by_token(session: Session, token: str) -> LeadSource | None:
    if not token.startswith(INTAKE_PREFIX) or len(token) > 200:
        return None
    return session.scalar(select(LeadSource).where(LeadSource.token_hash == hash_token(token)))


def source_by_key(session: Session, key: str) -> LeadSource | None:
    if not key or len(key) > 100:
        return None
    return session.scalar(select(LeadSource).where(LeadSource.key == key))


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The form webhook's signature: "sha256=" + hex HMAC-SHA256(secret, f"{timestamp}.{raw body}")."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def check_signature(
    secret: str, timestamp: str | None, given: str | None, body: bytes, now: datetime, tolerance: int
) -> None:
    """401 `bad_signature` unless `given` signs this body and timestamp; 401 `stale_timestamp` if the timestamp
    is further from now than `tolerance` seconds (a captured request replayed later is refused)."""
    if not timestamp or not given or not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise ApiError(
            401, "bad_signature", "签名无效：需要请求头 X-Leadpush-Timestamp（Unix 秒）和 X-Leadpush-Signature"
        )
    expected = signature(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode(), given.strip().encode()):
        raise ApiError(401, "bad_signature", "签名无效：请用该来源的签名密钥对「时间戳.请求体」做 HMAC-SHA256")
    if abs(now.timestamp() - int(timestamp)) > tolerance:
        raise ApiError(401, "stale_timestamp", f"请求时间戳已过期：与服务器时间相差超过 {tolerance // 60} 分钟")
