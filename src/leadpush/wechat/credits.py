"""Subscribe-message credits: granted by the mini program's wx.requestSubscribeMessage, spent on send.

Each "accept" the user taps is one message WeChat lets us send them on that template. A send reserves
its credit before the call, not after: a conditional decrement (`credits > 0`) in the database, so
two workers can never both spend a user's last credit, plus a marker row keyed by the delivery so a
delivery re-tried after a crash reuses its reservation instead of taking another. Success keeps the
credit spent; 43101 sets the balance to 0 (WeChat says none is left); any other failure gives it back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from leadpush.db import Database, rows_changed
from leadpush.errors import ApiError
from leadpush.notify.models import KeyValue
from leadpush.wechat.models import WechatSubscription

MAX_TEMPLATES = 20  # wx.requestSubscribeMessage asks for at most 3 at once; anything bigger is not its result

Settlement = Literal["spent", "refund", "none_left"]


# --------------------------------------------------------------------------------------
# Granted by the mini program
# --------------------------------------------------------------------------------------


def accepted_templates(result: dict[str, Any]) -> list[str]:
    """The template ids the user tapped "allow" for; reject / ban / filter earn nothing.

    A failed call (errMsg not ending in ":ok") earns nothing either.
    """
    if len(result) > MAX_TEMPLATES + 1:
        raise ApiError(422, "validation_error", f"订阅结果最多包含 {MAX_TEMPLATES} 个模板")
    err = result.get("errMsg")
    if err is not None and not str(err).endswith(":ok"):
        return []
    out = []
    for key, value in result.items():
        if key == "errMsg":
            continue
        if not key or len(key) > 128:
            raise ApiError(422, "validation_error", "模板 ID 格式不正确")
        if value == "accept":
            out.append(key)
    return out


def add_credits(session: Session, user_id: int, template_ids: list[str], now: datetime) -> None:
    """+1 credit per accepted template, atomically (concurrent reports each count)."""
    for tid in template_ids:
        bumped = session.execute(
            update(WechatSubscription)
            .where(WechatSubscription.user_id == user_id, WechatSubscription.template_id == tid)
            .values(credits=WechatSubscription.credits + 1, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if rows_changed(bumped) == 1:
            continue
        try:
            with session.begin_nested():
                session.add(WechatSubscription(user_id=user_id, template_id=tid, credits=1, updated_at=now))
        except IntegrityError:  # created concurrently: add to theirs
            session.execute(
                update(WechatSubscription)
                .where(WechatSubscription.user_id == user_id, WechatSubscription.template_id == tid)
                .values(credits=WechatSubscription.credits + 1, updated_at=now)
                .execution_options(synchronize_session=False)
            )


def credits_of(session: Session, user_id: int) -> dict[str, int]:
    rows = session.execute(
        select(WechatSubscription.template_id, WechatSubscription.credits).where(WechatSubscription.user_id == user_id)
    )
    return {tid: credits for tid, credits in rows}


def zero_credits(session: Session, user_id: int, now: datetime) -> None:
    """Every template's balance to 0: credits belong to an openid at WeChat, and the user changed theirs."""
    session.execute(
        update(WechatSubscription)
        .where(WechatSubscription.user_id == user_id)
        .values(credits=0, updated_at=now)
        .execution_options(synchronize_session=False)
    )


# --------------------------------------------------------------------------------------
# Spent by the channel
# --------------------------------------------------------------------------------------


def _reservation_key(delivery_id: int) -> str:
    return f"wechat-credit:{delivery_id}"


def reserve_credit(db: Database, user_id: int, template_id: str, delivery_id: int, now: datetime) -> bool:
    """Take one credit for this delivery (or find the one an earlier attempt took); False = none left."""
    key = _reservation_key(delivery_id)
    with db.write() as session:
        if session.get(KeyValue, key) is not None:
            return True
        taken = session.execute(
            update(WechatSubscription)
            .where(
                WechatSubscription.user_id == user_id,
                WechatSubscription.template_id == template_id,
                WechatSubscription.credits > 0,
            )
            .values(credits=WechatSubscription.credits - 1, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if rows_changed(taken) != 1:
            return False
        session.add(KeyValue(key=key, value=f"{user_id}:{template_id}", expires_at=None))
        return True


def settle_credit(
    db: Database, user_id: int, template_id: str, delivery_id: int, outcome: Settlement, now: datetime
) -> None:
    """outcome: "spent" (sent), "refund" (not sent, give it back) or "none_left" (43101: balance is 0)."""
    with db.write() as session:
        held = rows_changed(session.execute(delete(KeyValue).where(KeyValue.key == _reservation_key(delivery_id))))
        sub = (WechatSubscription.user_id == user_id, WechatSubscription.template_id == template_id)
        if outcome == "refund" and held:
            session.execute(
                update(WechatSubscription)
                .where(*sub)
                .values(credits=WechatSubscription.credits + 1, updated_at=now)
                .execution_options(synchronize_session=False)
            )
        elif outcome == "none_left":
            session.execute(
                update(WechatSubscription)
                .where(*sub)
                .values(credits=0, updated_at=now)
                .execution_options(synchronize_session=False)
            )
