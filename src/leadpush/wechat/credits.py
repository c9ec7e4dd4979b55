"""Subscribe-message credits: granted by the mini program's wx.requestSubscribeMessage, spent on send.

Each "accept" the user taps is one message WeChat lets us send them on that template. A send reserves
its credit before the call, not after: a conditional decrement (`credits > 0`) in the database, so
two workers can never both spend a user's last credit, plus a marker row keyed by the delivery so a
delivery re-tried after a crash reuses its reservation instead of taking another. Success keeps the
credit spent; 43101 sets the balance to 0 (WeChat says none is left); any other failure gives it back.

The last credits are kept for what matters most: a send may be told to leave `keep` credits untouched
(`LEADPUSH_WECHAT_CREDIT_RESERVE` for every kind but new leads), in the same conditional decrement
(`credits > keep`), so a warning never takes the credit a new lead needs, however many workers race.

Each answer of wx.requestSubscribeMessage is also kept per template (`last_result`): after a "ban" the user
must re-enable subscription messages in the mini program's settings, after a "reject" / "filter" (or with
no credit left) the mini program should ask again; `prompt_of` says which.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast, get_args

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from leadpush.db import Database, rows_changed
from leadpush.errors import ApiError
from leadpush.notify.models import KeyValue
from leadpush.wechat.models import WechatSubscription

MAX_TEMPLATES = 20  # wx.requestSubscribeMessage asks for at most 3 at once; anything bigger is not its result

Settlement = Literal["spent", "refund", "none_left"]
Answer = Literal["accept", "reject", "ban", "filter"]
ANSWERS: tuple[str, ...] = get_args(Answer)
# What the mini program should ask of the user for a template (None: nothing, credits are there).
Prompt = Literal["enable_in_settings", "ask_again"]
HINTS: dict[str, str] = {
    "enable_in_settings": (
        "你已关闭小程序的订阅消息，新线索无法通过微信提醒你。"
        "请点小程序右上角「···」→「设置」→「订阅消息」，重新打开接收"
    ),
    "reject": "你上次没有允许接收新线索提醒，下次弹出订阅提示时请点「允许」",
    "filter": "微信未能弹出订阅提示，请稍后在小程序中再点一次「允许」接收新线索提醒",
    "ask_again": "微信提醒次数已用完，下次弹出订阅提示时请点「允许」，以便继续接收新线索提醒",
}


# --------------------------------------------------------------------------------------
# Granted by the mini program
# --------------------------------------------------------------------------------------


def subscribe_answers(result: dict[str, Any]) -> dict[str, str]:
    """Template id -> the user's answer (accept | reject | ban | filter) in a wx.requestSubscribeMessage result.

    A failed call (errMsg not ending in ":ok") says nothing about any template: {}. An answer this server
    does not know (WeChat may add some) is left out: it neither earns a credit nor replaces the last answer.
    """
    if len(result) > MAX_TEMPLATES + 1:
        raise ApiError(422, "validation_error", f"订阅结果最多包含 {MAX_TEMPLATES} 个模板")
    err = result.get("errMsg")
    if err is not None and not str(err).endswith(":ok"):
        return {}
    out: dict[str, str] = {}
    for key, value in result.items():
        if key == "errMsg":
            continue
        if not key or len(key) > 128:
            raise ApiError(422, "validation_error", "模板 ID 格式不正确")
        if isinstance(value, str) and value in ANSWERS:
            out[key] = value
    return out


def accepted_templates(result: dict[str, Any]) -> list[str]:
    """The template ids the user tapped "allow" for; reject / ban / filter earn nothing.

    A failed call (errMsg not ending in ":ok") earns nothing either.
    """
    return [tid for tid, answer in subscribe_answers(result).items() if answer == "accept"]


def record_answers(session: Session, user_id: int, answers: dict[str, str], now: datetime) -> None:
    """Keep each template's latest answer (and when it came); accepts also count a credit (`add_credits`)."""
    add_credits(session, user_id, [tid for tid, a in answers.items() if a == "accept"], now)
    for tid, answer in answers.items():
        sub = (WechatSubscription.user_id == user_id, WechatSubscription.template_id == tid)
        noted = update(WechatSubscription).where(*sub).values(last_result=answer, last_result_at=now)
        if rows_changed(session.execute(noted.execution_options(synchronize_session=False))) == 1:
            continue
        try:
            with session.begin_nested():
                session.add(
                    WechatSubscription(
                        user_id=user_id,
                        template_id=tid,
                        credits=0,
                        updated_at=now,
                        last_result=answer,
                        last_result_at=now,
                    )
                )
        except IntegrityError:  # created concurrently
            session.execute(noted.execution_options(synchronize_session=False))


@dataclass(frozen=True)
class SubscriptionState:
    template_id: str
    credits: int
    last_result: Answer | None
    last_result_at: datetime | None

    @property
    def prompt(self) -> Prompt | None:
        """After a ban: re-enable in the settings; after a reject / filter, or with no credit: ask again."""
        if self.last_result == "ban":
            return "enable_in_settings"
        if self.last_result in ("reject", "filter") or self.credits <= 0:
            return "ask_again"
        return None

    @property
    def hint(self) -> str | None:
        prompt = self.prompt
        if prompt is None:
            return None
        if prompt == "ask_again" and self.last_result in ("reject", "filter"):
            return HINTS[self.last_result]
        return HINTS[prompt]


def subscriptions_of(session: Session, user_id: int) -> dict[str, SubscriptionState]:
    rows = session.execute(
        select(
            WechatSubscription.template_id,
            WechatSubscription.credits,
            WechatSubscription.last_result,
            WechatSubscription.last_result_at,
        ).where(WechatSubscription.user_id == user_id)
    )
    # Only ANSWERS are ever stored (record_answers).
    return {tid: SubscriptionState(tid, n, cast("Answer | None", last), at) for tid, n, last, at in rows}


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


@dataclass(frozen=True)
class Reservation:
    """The answer of `reserve_credit`: truthy when the delivery holds a credit now."""

    taken: bool
    left: int  # the balance after the reservation (when taken) or as found (when not)
    # `reserve_for_send` only: today's quota is used up until then (quota.py), so nothing was taken; `taken`
    # then says whether the delivery could have had a credit (as `spendable` would).
    quota_resets: datetime | None = None

    def __bool__(self) -> bool:
        return self.taken


def reserve_credit(
    db: Database, user_id: int, template_id: str, delivery_id: int, now: datetime, keep: int = 0
) -> Reservation:
    """Take one credit for this delivery (or find the one an earlier attempt took), leaving at least `keep`
    credits untouched: the decrement is conditional (`credits > keep`), so concurrent sends never take
    what is kept. Not taken: `left` says why (0 = none at all, else only the kept ones are left)."""
    key = _reservation_key(delivery_id)
    sub = (WechatSubscription.user_id == user_id, WechatSubscription.template_id == template_id)
    with db.write() as session:
        if session.get(KeyValue, key) is not None:
            return Reservation(True, _balance(session, user_id, template_id))
        taken = session.execute(
            update(WechatSubscription)
            .where(*sub, WechatSubscription.credits > max(0, keep))
            .values(credits=WechatSubscription.credits - 1, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if rows_changed(taken) != 1:
            return Reservation(False, _balance(session, user_id, template_id))
        session.add(KeyValue(key=key, value=f"{user_id}:{template_id}", expires_at=None))
        return Reservation(True, _balance(session, user_id, template_id))


def reserve_for_send(
    db: Database, user_id: int, template_id: str, delivery_id: int, now: datetime, keep: int, quota_key: str
) -> Reservation:
    """What a send does before calling WeChat, in one write transaction (it was a read and a write, issue 17):
    look at the daily-quota marker (`quota_key`, quota.py) and this delivery's reservation in one statement;
    with the quota used up, take nothing, give back a credit an earlier (crashed) attempt of this delivery had
    reserved, and answer with `quota_resets`; else `reserve_credit`, the balance read back by the decrement."""
    key = _reservation_key(delivery_id)
    sub = (WechatSubscription.user_id == user_id, WechatSubscription.template_id == template_id)
    with db.write() as session:
        rows = session.execute(select(KeyValue.key, KeyValue.expires_at).where(KeyValue.key.in_((key, quota_key))))
        found = {k: expires for k, expires in rows}
        resets = found.get(quota_key)
        held = key in found
        if quota_key in found and resets is not None and resets > now:
            left = _balance(session, user_id, template_id)
            if held:  # as settle_credit(..., "refund") would
                session.execute(delete(KeyValue).where(KeyValue.key == key))
                session.execute(
                    update(WechatSubscription)
                    .where(*sub)
                    .values(credits=WechatSubscription.credits + 1, updated_at=now)
                    .execution_options(synchronize_session=False)
                )
            return Reservation(held or left > max(0, keep), left, resets)
        if held:
            return Reservation(True, _balance(session, user_id, template_id))
        after = session.execute(
            update(WechatSubscription)
            .where(*sub, WechatSubscription.credits > max(0, keep))
            .values(credits=WechatSubscription.credits - 1, updated_at=now)
            .returning(WechatSubscription.credits)
            .execution_options(synchronize_session=False)
        ).scalar()
        if after is None:
            return Reservation(False, _balance(session, user_id, template_id))
        session.execute(insert(KeyValue).values(key=key, value=f"{user_id}:{template_id}", expires_at=None))
        return Reservation(True, int(after))


def spendable(db: Database, user_id: int, template_id: str, delivery_id: int, keep: int = 0) -> Reservation:
    """What `reserve_credit` would answer, without taking anything (a read)."""
    with db.read() as session:
        left = _balance(session, user_id, template_id)
        held = session.get(KeyValue, _reservation_key(delivery_id)) is not None
    return Reservation(held or left > max(0, keep), left)


def _balance(session: Session, user_id: int, template_id: str) -> int:
    found = session.scalar(
        select(WechatSubscription.credits).where(
            WechatSubscription.user_id == user_id, WechatSubscription.template_id == template_id
        )
    )
    return int(found or 0)


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
