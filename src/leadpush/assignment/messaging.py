"""Who hears of an ownership change, and what they read: one builder per kind of notice, the texts here.

The new owner hears they gained a lead; the previous owner, unless they moved it themselves, that they
lost it. With a digest, each of them hears once for the whole batch. `change_owner` writes what these
functions build, in its own transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy.orm import Session

from leadpush.context import AppContext
from leadpush.leads.models import Customer
from leadpush.notify.ledger import NewNotification
from leadpush.users.models import User
from leadpush.users.service import users_by_id, users_in_hand

DIGEST_PREVIEW = 20
REASONS = {"auto_transfer": "超时未跟进，自动流转", "release": "已被释放回公海", "escalation": "超时未查看，已改派"}


@dataclass(frozen=True)
class Change:
    """What every notice about one ownership change shares: who made it, how, when, in which batch."""

    ctx: AppContext
    actor: User | None
    via: str
    batch_id: str | None
    now: datetime

    @property
    def actor_id(self) -> int | None:
        return self.actor.id if self.actor else None

    @property
    def actor_name(self) -> str:
        return self.actor.name if self.actor else "系统"

    def common(self) -> dict[str, object]:
        return {"via": self.via, "actorId": self.actor_id, "actorName": self.actor_name, "batchId": self.batch_id}

    def assign_time(self) -> str:
        return self.now.astimezone(self.ctx.settings.tz).isoformat(timespec="seconds")

    def fields(self, customer: Customer) -> dict[str, object]:
        """A lead as the WeChat template and the in-app message show it (the `customer_assigned` contract)."""
        return {
            "customerId": customer.id,
            "customerName": customer.name,
            "customerPhone": customer.phone,
            "source": customer.source,
            "assignTime": self.assign_time(),
        }


def notifications_for(
    session: Session,
    change: Change,
    changed: Sequence[Customer],
    previous: dict[int, int | None],
    *,
    digest: bool,
    reason: str | None,
) -> list[NewNotification]:
    """The notices for the moved leads (`previous` = each one's owner before): gains first, then losses."""
    gained, lost = _gains_and_losses(changed, previous, change.actor_id)
    users = users_in_hand(session, set(gained) | set(lost))
    items: list[NewNotification] = []
    for rid, leads in gained.items():
        if digest and len(leads) > 1:
            items.append(_assigned_digest(change, users[rid], leads))
        else:
            items.extend(_assigned_one(change, users[rid], c, previous[c.id]) for c in leads)
    why = recycle_reason(change, reason)
    for rid, leads in lost.items():
        if digest and len(leads) > 1:
            items.append(_recycled_digest(change, users[rid], [c.id for c in leads], why))
        else:
            items.extend(_recycled_one(change, users[rid], c, why) for c in leads)
    return items


@dataclass
class BatchMoves:
    """Who gained and who lost which leads in a batch moved without notices (a transfer run), by lead id.

    `gained`: person -> [(lead id, how it reached them, whom it was taken from)]; `lost`: person -> [(lead id,
    why, None = the batch's usual reason)]. Built from the batch's history rows; only the leads a notice shows are ever loaded (`shown`).
    """

    gained: dict[int, list[tuple[int, str, int | None]]]
    lost: dict[int, list[tuple[int, str | None]]]

    def shown(self) -> set[int]:
        """The leads the notices show: a single lead's notice, and a digest's first DIGEST_PREVIEW."""
        ids = {cid for gains in self.gained.values() for cid, _via, _before in gains[:DIGEST_PREVIEW]}
        return ids | {losses[0][0] for losses in self.lost.values() if len(losses) == 1}


def batch_notifications(
    session: Session, change: Change, moves: BatchMoves, leads: dict[int, Customer], *, key: str
) -> list[NewNotification]:
    """The notices for a batch whose moves were written without any: per person, one for what they gained and
    one for what they lost, each a digest when several leads. `leads`: at least `moves.shown()`.

    Dedupe keys name the batch (`key`), so writing them twice sends them once.
    """
    users = users_by_id(session, set(moves.gained) | set(moves.lost))
    items: list[NewNotification] = []
    for rid, gains in moves.gained.items():
        if len(gains) > 1:
            ids = [cid for cid, _via, _before in gains]
            preview = [leads[cid] for cid in ids[:DIGEST_PREVIEW]]
            items.append(_assigned_digest(change, users[rid], preview, ids))
        else:
            [(cid, via, before)] = gains
            one = replace(change, via=via)
            items.append(_assigned_one(one, users[rid], leads[cid], before, key=f"customer_assigned:{cid}:{key}"))
    for rid, losses in moves.lost.items():
        reasons = {recycle_reason(change, why) for _cid, why in losses}
        why = reasons.pop() if len(reasons) == 1 else recycle_reason(change, None)
        if len(losses) > 1:
            items.append(_recycled_digest(change, users[rid], [cid for cid, _why in losses], why))
        else:
            [(cid, _why)] = losses
            items.append(_recycled_one(change, users[rid], leads[cid], why, key=f"customer_recycled:{cid}:{key}"))
    return items


def _gains_and_losses(
    changed: Sequence[Customer], previous: dict[int, int | None], actor_id: int | None
) -> tuple[dict[int, list[Customer]], dict[int, list[Customer]]]:
    """The moved leads by who gained them and by who lost them (not the actor: they know)."""
    gained: dict[int, list[Customer]] = defaultdict(list)
    lost: dict[int, list[Customer]] = defaultdict(list)
    for c in changed:
        if c.owner_id is not None:
            gained[c.owner_id].append(c)
        before = previous[c.id]
        if before is not None and before != actor_id:
            lost[before].append(c)
    return gained, lost


def assigned_body(actor_name: str, via: str, c: Customer) -> str:
    source = f"（来源：{c.source}）" if c.source else ""
    if via == "claim":
        return f"您从公海领取了线索「{c.name}」{source}"
    if via == "auto_transfer":
        return f"线索「{c.name}」超时未跟进，已自动流转给您{source}"
    if via == "escalation":
        return f"线索「{c.name}」原负责人超时未查看，已改派给您，请尽快联系{source}"
    return f"{actor_name} 将线索「{c.name}」分配给您{source}"


def _assigned_one(
    change: Change, recipient: User, c: Customer, from_user_id: int | None, key: str | None = None
) -> NewNotification:
    return NewNotification(
        recipient=recipient,
        kind="customer_assigned",
        title=f"您有一条新线索：{c.name}",
        body=assigned_body(change.actor_name, change.via, c),
        payload={**change.common(), **change.fields(c), "fromUserId": from_user_id},
        dedupe_key=key or f"customer_assigned:{c.id}:v{c.version}",
        actor_id=change.actor_id,
    )


def assigned_digest_body(change: Change, count: int) -> str:
    if change.via == "auto_transfer":
        return f"{count} 条线索超时未跟进，已自动流转给您"
    return f"{change.actor_name} 分配给您 {count} 条线索"


def _assigned_digest(
    change: Change, recipient: User, leads: list[Customer], ids: list[int] | None = None
) -> NewNotification:
    """`leads`: the leads it shows (the first DIGEST_PREVIEW are); `ids`: every lead's id, when not all are in
    `leads`."""
    ids = ids if ids is not None else [c.id for c in leads]
    return NewNotification(
        recipient=recipient,
        kind="customers_assigned",
        title=f"您有 {len(ids)} 条新线索",
        body=assigned_digest_body(change, len(ids)),
        payload={
            **change.common(),
            "count": len(ids),
            "customerIds": ids,
            "customers": [change.fields(c) for c in leads[:DIGEST_PREVIEW]],
            "assignTime": change.assign_time(),
        },
        dedupe_key=f"customers_assigned:{change.batch_id}:{recipient.id}",
        actor_id=change.actor_id,
    )


def recycle_reason(change: Change, reason: str | None) -> str:
    """Why the previous owner lost the lead: the reason given, else one that says how it went."""
    return reason or REASONS.get(change.via, f"{change.actor_name} 重新分配")


def _recycled_one(change: Change, recipient: User, c: Customer, why: str, key: str | None = None) -> NewNotification:
    return NewNotification(
        recipient=recipient,
        kind="customer_recycled",
        title=f"线索「{c.name}」已被收回",
        body=why,
        payload={
            **change.common(),
            "customerId": c.id,
            "customerName": c.name,
            "toUserId": c.owner_id,
            "reason": why,
        },
        dedupe_key=key or f"customer_recycled:{c.id}:v{c.version}",
        actor_id=change.actor_id,
    )


def _recycled_digest(change: Change, recipient: User, ids: list[int], why: str) -> NewNotification:
    return NewNotification(
        recipient=recipient,
        kind="customers_recycled",
        title=f"您有 {len(ids)} 条线索已被收回",
        body=why,
        payload={**change.common(), "count": len(ids), "customerIds": ids, "reason": why},
        dedupe_key=f"customers_recycled:{change.batch_id}:{recipient.id}",
        actor_id=change.actor_id,
    )
