"""Expiry: a time-sensitive notice (a transfer warning, an SLA reminder, a follow-up reminder) that can no
longer be true when it is about to be sent — the lead moved, the rule was disabled, the deadline passed —
is skipped with the reason, not sent.

Runs at claim time, inside the claim's transaction, over the due deliveries it picked (notify.claimrules),
on every channel, in-app included: a delivery held for quiet hours or retried after a failure is judged
again each time it comes due. What a notice promised is read from its own payload (the lead, the rule, the
deadline or planned time, the owner it was about) and compared with the lead as it is now, in a few
queries for the whole batch. An expired in-app delivery also marks its notification read, so a client that
catches up from the ledger later lists it without popping it up as news.

This module reads the tables of the capabilities whose notices it judges (leads, transfer rules, SLA rules);
it writes only deliveries and notifications.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from leadpush.leads.models import Customer
from leadpush.notify.models import Delivery, Notification
from leadpush.sla.models import STEPS, SlaRule
from leadpush.transfer.models import TransferRule

PREFIX = "通知已失效："
MOVED = "线索已转给他人"
POOLED = "线索已退回公海"
GONE = "线索已删除"
REASSIGNED = "线索已重新分配"
OPENED = "线索已被查看"
STAGE_PASSED = "已进入下一升级步骤"
SLA_RULE_OFF = "首次联系规则已停用或删除"
TRANSFER_RULE_OFF = "流转规则已停用或删除"
DEADLINE_PASSED = "流转截止时间已过"
DEADLINE_MOVED = "流转截止时间已变更"
PLAN_CLEARED = "跟进计划已完成或已取消"
PLAN_CHANGED = "跟进计划已修改"

EXPIRING_KINDS = ("transfer_warning", "sla_reminder", "sla_escalated", "followup_due")
# The ladder stage each SLA notice is sent at (leadpush.sla.models.STEPS: remind, manager, reassign).
SLA_STAGES = {"sla_reminder": STEPS.index("remind") + 1, "sla_escalated": STEPS.index("manager") + 1}


@dataclass(frozen=True)
class Lead:
    """What expiry needs of a lead as it is now."""

    owner_id: int | None
    assigned_at: datetime | None
    opened_at: datetime | None
    sla_stage: int
    sla_rule_id: int | None
    transfer_due_at: datetime | None
    next_follow_up_at: datetime | None


@dataclass(frozen=True)
class Notice:
    delivery_id: int
    notification_id: int
    channel: str
    kind: str
    recipient_id: int
    payload: dict[str, Any]


def skip_expired(session: Session, ids: list[int], now: datetime) -> list[int]:
    """Skip (status skipped, with why) the deliveries among `ids` whose notice is no longer true; the rest."""
    if not ids:
        return ids
    notices = [
        Notice(*row)
        for row in session.execute(
            select(
                Delivery.id,
                Notification.id,
                Delivery.channel,
                Notification.kind,
                Notification.recipient_id,
                Notification.payload,
            )
            .join(Notification, Notification.id == Delivery.notification_id)
            .where(Delivery.id.in_(ids), Notification.kind.in_(EXPIRING_KINDS))
        )
    ]
    if not notices:
        return ids
    leads = _leads(session, {i for n in notices if (i := _int(n.payload.get("customerId"))) is not None})
    transfer_rules = _enabled(session, TransferRule, _rule_ids(notices, ("transfer_warning",)))
    sla_rules = _enabled(session, SlaRule, _rule_ids(notices, tuple(SLA_STAGES)))
    expired: dict[int, str] = {}
    read: set[int] = set()
    for notice in notices:
        reason = why_expired(notice, leads, transfer_rules, sla_rules, now)
        if reason is None:
            continue
        expired[notice.delivery_id] = PREFIX + reason
        if notice.channel == "inapp":
            read.add(notice.notification_id)
    if not expired:
        return ids
    session.execute(
        update(Delivery),
        [
            # No longer waiting for anything: a hold's reason goes with it.
            {
                "id": did,
                "status": "skipped",
                "last_error": why,
                "lease_until": None,
                "hold_reason": None,
                "updated_at": now,
            }
            for did, why in sorted(expired.items())
        ],
    )
    if read:
        session.execute(
            update(Notification)
            .where(Notification.id.in_(sorted(read)), Notification.read_at.is_(None))
            .values(read_at=now)
            .execution_options(synchronize_session=False)
        )
    return [i for i in ids if i not in expired]


def why_expired(
    notice: Notice, leads: dict[int, Lead], transfer_rules: set[int], sla_rules: set[int], now: datetime
) -> str | None:
    """Why the notice is no longer true (None: it still is, or it carries too little to tell)."""
    p = notice.payload
    customer_id = _int(p.get("customerId"))
    if customer_id is None:
        return None
    lead = leads.get(customer_id)
    if lead is None:
        return GONE
    if notice.kind == "transfer_warning":
        return _transfer_warning(notice, lead, transfer_rules, now)
    if notice.kind in SLA_STAGES:
        return _sla(notice, lead, sla_rules)
    return _followup(notice, lead)


def _not_theirs(lead: Lead, owner_id: int | None) -> str | None:
    """Why the lead is no longer `owner_id`'s (None: it still is)."""
    if lead.owner_id is None:
        return POOLED
    if lead.owner_id != owner_id:
        return MOVED
    return None


def _transfer_warning(notice: Notice, lead: Lead, enabled: set[int], now: datetime) -> str | None:
    p = notice.payload
    moved = _not_theirs(lead, notice.recipient_id)
    if moved:
        return moved
    rule_id = _int(p.get("ruleId"))
    if rule_id is not None and rule_id not in enabled:
        return TRANSFER_RULE_OFF
    due = _when(p.get("dueAt"))
    if due is None:
        return None
    if due <= now:
        return DEADLINE_PASSED
    # dueAt is written to the second: a deadline within the same second has not moved.
    if lead.transfer_due_at is None or _seconds(lead.transfer_due_at) != _seconds(due):
        return DEADLINE_MOVED
    return None


def _sla(notice: Notice, lead: Lead, enabled: set[int]) -> str | None:
    p = notice.payload
    # The reminder is the owner's own; the escalation tells a manager about the owner named in it.
    owner_id = notice.recipient_id if notice.kind == "sla_reminder" else _int(p.get("ownerId"))
    moved = _not_theirs(lead, owner_id)
    if moved:
        return moved
    assigned = _when(p.get("assignTime"))
    if assigned is not None and (lead.assigned_at is None or _seconds(lead.assigned_at) != _seconds(assigned)):
        return REASSIGNED  # taken away and given back since: a new ownership with its own ladder
    if lead.opened_at is not None:
        return OPENED
    rule_id = _int(p.get("ruleId"))
    if rule_id is not None and (rule_id not in enabled or lead.sla_rule_id != rule_id):
        return SLA_RULE_OFF
    if lead.sla_stage > SLA_STAGES[notice.kind]:
        return STAGE_PASSED
    return None


def _followup(notice: Notice, lead: Lead) -> str | None:
    moved = _not_theirs(lead, notice.recipient_id)
    if moved:
        return moved
    planned = _when(notice.payload.get("plannedAt"))
    if planned is None:
        return None
    if lead.next_follow_up_at is None:
        return PLAN_CLEARED
    if lead.next_follow_up_at != planned:
        return PLAN_CHANGED
    return None


def _leads(session: Session, ids: set[int]) -> dict[int, Lead]:
    if not ids:
        return {}
    rows = session.execute(
        select(
            Customer.id,
            Customer.owner_id,
            Customer.assigned_at,
            Customer.opened_at,
            Customer.sla_stage,
            Customer.sla_rule_id,
            Customer.transfer_due_at,
            Customer.next_follow_up_at,
        ).where(Customer.id.in_(sorted(ids)))
    )
    return {r[0]: Lead(*r[1:]) for r in rows}


def _rule_ids(notices: Iterable[Notice], kinds: tuple[str, ...]) -> set[int]:
    return {i for n in notices if n.kind in kinds and (i := _int(n.payload.get("ruleId"))) is not None}


def _enabled(session: Session, model: type[TransferRule] | type[SlaRule], ids: set[int]) -> set[int]:
    if not ids:
        return set()
    return set(session.scalars(select(model.id).where(model.id.in_(sorted(ids)), model.enabled.is_(True))))


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _when(value: object) -> datetime | None:
    """An ISO time from a payload (aware), or None if absent or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def _seconds(when: datetime) -> datetime:
    return when.replace(microsecond=0)
