"""What the automatic transfer tells people: the warning before a lead goes, and why it went.

The notice a lead's previous and new owner get when it moves is `assignment.messaging`'s (the move is
an ownership change like any other); this module gives it the reason.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from leadpush.leads.models import Customer
from leadpush.notify.ledger import NewNotification
from leadpush.transfer.models import TransferRule
from leadpush.users.models import User

ACTION_NAMES = {"public_pool": "退回公海", "round_robin": "团队内轮流分配", "user": "转给指定人员"}


REASON_MARK = "：超时未跟进，"


def transfer_reason(rule: TransferRule) -> str:
    """Why a lead moved under `rule`, as its previous owner reads it and the history keeps it."""
    return f"{rule.name}{REASON_MARK}{ACTION_NAMES.get(rule.action, '自动流转')}"


def max_moves_reason(rule: TransferRule, moves: int) -> str:
    """Why a lead went to the pool rather than to the rule's next person: it moved too often already."""
    return f"{rule.name}{REASON_MARK}已自动流转 {moves} 次，退回公海"


def rule_name_in(reason: str | None) -> str | None:
    """The rule's name as `transfer_reason` wrote it into a history row (the rule may since be renamed or
    deleted; the name is the one the owner was told)."""
    name, mark, _action = (reason or "").rpartition(REASON_MARK)
    return name or None if mark else None


def transfer_warning(
    owner: User, customer: Customer, rule: TransferRule | None, due: datetime, now: datetime, tz: ZoneInfo
) -> NewNotification:
    """Tell `owner` that `customer` moves at `due` (under `rule`) unless they follow it up first."""
    hours_left = max(0.0, (due - now).total_seconds() / 3600)
    action = ACTION_NAMES.get(rule.action, "流转") if rule else "流转"
    return NewNotification(
        recipient=owner,
        kind="transfer_warning",
        title=f"线索「{customer.name}」即将被自动流转",
        body=f"请在 {due.astimezone(tz):%m-%d %H:%M} 前跟进，否则将{action}（约 {hours_left:.1f} 小时后）",
        payload={
            "customerId": customer.id,
            "customerName": customer.name,
            "customerPhone": customer.phone,
            "source": customer.source,
            "dueAt": due.astimezone(tz).isoformat(timespec="seconds"),
            "assignTime": due.astimezone(tz).isoformat(timespec="seconds"),
            "ruleId": rule.id if rule else None,
            "ruleName": rule.name if rule else None,
            "action": rule.action if rule else None,
        },
        dedupe_key=f"transfer_warning:{customer.id}:{due.isoformat()}",
    )
