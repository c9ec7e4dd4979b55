"""The one ownership-change path: owner, history and notifications in the caller's transaction.

Who hears of a change and what they read is `assignment.messaging`; who may ask for one, `actions`.

Every way a lead changes hands (web, mini program, batch, public pool, claim, release, automatic
transfer) ends in `change_owner`. It never commits: the caller's `Database.write()` block does, so a
rolled-back change leaves no owner change, no history row and no notification.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, bindparam, func, insert, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql.dml import ReturningUpdate

from leadpush.assignment.messaging import BatchMoves, Change, batch_notifications, notifications_for
from leadpush.assignment.models import VIAS, Assignment
from leadpush.assignment.schemas import AssignmentOut, TakenBackOut
from leadpush.context import AppContext
from leadpush.errors import ApiError
from leadpush.leads.models import Customer
from leadpush.leads.service import get_visible
from leadpush.notify.ledger import insert_at_last_step, write_notifications
from leadpush.notify.models import Notification
from leadpush.sla.progress import start_ladders
from leadpush.transfer.deadlines import refresh_deadlines
from leadpush.transfer.messaging import rule_name_in
from leadpush.transfer.models import TransferBackoff, TransferRule
from leadpush.users.models import User
from leadpush.users.service import is_db_id, users_by_id

CLOSED_STATUSES = ("won", "lost", "invalid")


@dataclass
class Move:
    """One lead to one new owner (None = the pool).

    With `expected_version` the move happens only if the lead still has that version (the client or the
    automatic transfer saw it). Without, it happens only if the lead still has the owner it had when
    `customer` was read: the owner the request was authorized and decided on.
    """

    customer: Customer
    to_user: User | None
    expected_version: int | None = None
    # With to_user None: the pool it goes to (None = the company-wide pool).
    to_pool: int | None = None


@dataclass
class ItemFailure:
    customer_id: int
    code: str
    message: str


@dataclass
class ChangeResult:
    batch_id: str | None
    changed: list[Customer] = field(default_factory=list)
    unchanged: list[Customer] = field(default_factory=list)
    failed: list[ItemFailure] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)
    # Everyone the change was told to (held so the answer built from it finds them in the session, unread).
    people: list[User] = field(default_factory=list)


FAILURE_STATUS = {
    "version_conflict": 409,
    "user_inactive": 409,
    "at_capacity": 409,
    "not_in_pool": 409,
    "not_owned": 409,
    "forbidden": 403,
    "customer_not_found": 404,
}


def raise_failure(failure: ItemFailure) -> None:
    raise ApiError(FAILURE_STATUS.get(failure.code, 409), failure.code, failure.message)


def open_lead_count(session: Session, user_id: int) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Customer)
            .where(Customer.owner_id == user_id, Customer.status.not_in(CLOSED_STATUSES))
        )
        or 0
    )


def lock_users(session: Session, user_ids: Iterable[int]) -> None:
    """Hold these users' rows until commit, so a count about them (open leads, claims today) stays true
    until the change it allows is written: two requests counting for one person queue instead of both
    passing a check-then-act.

    PostgreSQL only: SQLite write transactions are already serialised (BEGIN IMMEDIATE). Users are locked
    before any lead and in id order, so two transactions never wait on each other in a circle. FOR NO KEY
    UPDATE leaves the foreign-key checks of rows that point at these users (FOR KEY SHARE) unblocked.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    held: set[int] = session.info.setdefault("locked_users", set())
    wanted = sorted(set(user_ids) - held)
    if wanted:
        session.execute(select(User.id).where(User.id.in_(wanted)).order_by(User.id).with_for_update(key_share=True))
        held.update(wanted)


def _as_seen(customer: Customer, expected: int | None, owner_id: int | None, version: int) -> bool:
    return version == expected if expected is not None else owner_id == customer.owner_id


def _pool_of(move: Move) -> int | None:
    return move.to_pool if move.to_user is None else None


def _apply_moves(session: Session, planned: list[Move], now: datetime) -> dict[int, int]:
    """Move the leads still as their requests saw them; returns each moved lead's new version.

    A lead with an expected version moves only if it still has it; one without only if it still has the
    owner it was read with (see `Move`). The version is raised in SQL and read back, never computed from
    a value read earlier. One lead takes one conditional UPDATE. Several are locked first, in id order (on
    PostgreSQL; so overlapping batches listed in opposite orders queue instead of deadlocking), compared,
    and then updated with one statement per destination (person or pool): a batch of 10,000 leads for five
    people is five UPDATEs, each as long as its id list, never a CASE over every lead.
    """
    if not planned:
        return {}
    if len(planned) == 1:
        move = planned[0]
        customer, expected = move.customer, move.expected_version
        if expected is not None:
            seen: tuple[str, int | None] = ("version", expected)
        else:
            seen = ("owner", customer.owner_id) if customer.owner_id is not None else ("no_owner", None)
        return _move_to(session, [customer.id], seen, move.to_user, _pool_of(move), now)
    current = session.execute(
        select(Customer.id, Customer.owner_id, Customer.version)
        .where(Customer.id.in_([m.customer.id for m in planned]))
        .order_by(Customer.id)
        .with_for_update(key_share=True)
    )
    rows = {r.id: r for r in current}
    destinations: dict[tuple[int | None, int | None], tuple[User | None, list[int]]] = {}
    for m in planned:
        row = rows.get(m.customer.id)
        if row is None or not _as_seen(m.customer, m.expected_version, row.owner_id, row.version):
            continue
        key = (m.to_user.id if m.to_user else None, _pool_of(m))
        destinations.setdefault(key, (m.to_user, []))[1].append(m.customer.id)
    moved: dict[int, int] = {}
    for (_owner, pool), (target, ids) in destinations.items():
        moved.update(_move_to(session, ids, ("any", None), target, pool, now))
    return moved


_HISTORY_INSERT = insert(cast(Table, Assignment.__table__))

_PLAN_CLEARED: dict[str, None] = {"next_follow_up_at": None, "next_follow_up_note": None, "follow_up_remind_at": None}


@cache
def _move_statement(condition: str, to_pool: bool, one: bool = False) -> ReturningUpdate[tuple[int, int]]:
    """The UPDATE of `_move_to`, built once per shape: a Core statement on the table (no ORM bulk-update pass,
    no statement built and cache-keyed per request); the values are bound per call. `one`: a single lead, by
    `id = :lead_id` (an expanding `IN` list is rewritten into the SQL at every execution: ~0.1 ms per assignment)."""
    table = cast(Table, Customer.__table__)
    t = table.c
    where: list[ColumnElement[bool]] = [
        t.id == bindparam("lead_id") if one else t.id.in_(bindparam("ids", expanding=True))
    ]
    if condition == "version":
        where.append(t.version == bindparam("seen"))
    elif condition == "owner":
        where.append(t.owner_id == bindparam("seen"))
    elif condition == "no_owner":
        where.append(t.owner_id.is_(None))
    values: dict[str, Any] = {
        "owner_id": bindparam("owner_id", type_=t.owner_id.type),
        "version": t.version + 1,
        "assigned_at": bindparam("assigned_at", type_=t.assigned_at.type),
        "pool_id": bindparam("pool_id", type_=t.pool_id.type),
        "pooled_at": bindparam("pooled_at", type_=t.pooled_at.type),
        "updated_at": bindparam("updated_at", type_=t.updated_at.type),
        "transfer_due_at": None,
        "transfer_warn_at": None,
        "transfer_rule_id": None,
        "transfer_warned_for": None,
    }
    if to_pool:  # A lead in a pool has nobody to remind: its follow-up plan ends there (one to a person stays).
        values.update(_PLAN_CLEARED)
    return update(table).where(*where).values(values).returning(t.id, t.version)


def _move_to(
    session: Session,
    ids: list[int],
    seen: tuple[str, int | None],
    target: User | None,
    pool: int | None,
    now: datetime,
) -> dict[int, int]:
    """One UPDATE: these leads (still as `seen`: ("version", v), ("owner", id), ("no_owner", None) or ("any",
    None)) to `target`, or with None to `pool`; their new versions."""
    condition, value = seen
    one = len(ids) == 1
    params: dict[str, Any] = {
        **({"lead_id": ids[0]} if one else {"ids": ids}),
        "owner_id": target.id if target is not None else None,
        "assigned_at": now if target is not None else None,
        "pool_id": pool if target is None else None,
        "pooled_at": None if target is not None else now,
        "updated_at": now,
    }
    if condition in ("version", "owner"):
        params["seen"] = value
    session.flush()  # what the ORM statement's autoflush did: pending changes go first (a Core statement skips it)
    rows_moved = session.execute(_move_statement(condition, target is None, one), params)
    return {r.id: r.version for r in rows_moved}


def write_lead_updates(session: Session, customers: Sequence[Customer], updates: list[dict[str, object]]) -> None:
    """Write the columns several steps changed on these leads (`{"id": …, column: value}` each, values already
    on the objects) as one executemany by primary key: one UPDATE per lead at most, however many steps."""
    if not updates:
        return
    columns = sorted({key for change in updates for key in change if key != "id"})
    by_id = {c.id: c for c in customers}
    ids = list(dict.fromkeys(int(str(change["id"])) for change in updates))
    session.execute(update(Customer), [{"id": cid, **{k: getattr(by_id[cid], k) for k in columns}} for cid in ids])


def change_owner(
    ctx: AppContext,
    session: Session,
    *,
    actor: User | None,
    moves: list[Move],
    via: str,
    digest: bool = False,
    batch_id: str | None = None,
    reason: str | None = None,
    now: datetime | None = None,
    rules: list[TransferRule] | None = None,
    notify: bool = True,
    backoffs: dict[int, TransferBackoff] | None = None,
    history_at_last_step: bool = False,
) -> ChangeResult:
    """Move each lead to its new owner (None = the public pool) and notify who must hear of it.

    Each move is a conditional update (see `Move`): a lead changed meanwhile by someone else is reported
    as `version_conflict` and left alone. Moving a lead to its current owner changes and notifies nothing.
    A target with a capacity is locked before its leads are counted (`lock_users`), so concurrent requests
    cannot all fill its last place. With `digest`, each recipient gets one notification for the whole batch.
    With `notify=False` nobody is told yet: the caller tells everyone of the whole batch at once, later, with
    `notify_batch` (a transfer run, whose leads move in transactions of their own). `backoffs`: the automatic
    transfer's backoffs of these leads, when the caller already knows them (see `refresh_deadlines`).
    `history_at_last_step`: the history rows are inserted in the ledger's last step (on PostgreSQL in its
    pipeline, one round trip fewer), for a caller that reads no history before its commit.
    """
    assert via in VIAS, via
    now = now or ctx.clock.now()
    if digest and batch_id is None:
        batch_id = uuid.uuid4().hex
    result = ChangeResult(batch_id=batch_id)
    capacity_used: dict[int, int] = {}
    previous: dict[int, int | None] = {}

    lock_users(
        session,
        (
            m.to_user.id
            for m in moves
            if m.to_user is not None and m.to_user.capacity is not None and m.customer.owner_id != m.to_user.id
        ),
    )
    planned: list[Move] = []
    for move in sorted(moves, key=lambda m: m.customer.id):
        customer, target = move.customer, move.to_user
        target_id = target.id if target else None
        if customer.owner_id == target_id and (target is not None or customer.pool_id == move.to_pool):
            result.unchanged.append(customer)
            continue
        if target is not None:
            if not target.active:
                result.failed.append(ItemFailure(customer.id, "user_inactive", f"{target.name} 已停用，不能接收线索"))
                continue
            if target.capacity is not None:
                if target.id not in capacity_used:
                    capacity_used[target.id] = open_lead_count(session, target.id)
                if capacity_used[target.id] >= target.capacity:
                    result.failed.append(
                        ItemFailure(customer.id, "at_capacity", f"{target.name} 的线索已达上限 {target.capacity} 条")
                    )
                    continue
                capacity_used[target.id] += 1
        planned.append(move)

    moved = _apply_moves(session, planned, now)
    history: list[dict[str, object]] = []
    for move in planned:
        customer, target = move.customer, move.to_user
        if customer.id not in moved:
            result.failed.append(ItemFailure(customer.id, "version_conflict", "线索已被他人修改，请刷新后重试"))
            continue
        target_id = target.id if target else None
        previous[customer.id] = customer.owner_id
        for attr, value in (
            ("owner_id", target_id),
            ("version", moved[customer.id]),
            ("assigned_at", now if target is not None else None),
            ("pool_id", _pool_of(move)),
            ("pooled_at", None if target is not None else now),
            ("updated_at", now),
            ("transfer_due_at", None),
            ("transfer_warn_at", None),
            ("transfer_rule_id", None),
            ("transfer_warned_for", None),
            *(_PLAN_CLEARED.items() if target is None else ()),
        ):
            set_committed_value(customer, attr, value)
        history.append(
            {
                "customer_id": customer.id,
                "from_user_id": previous[customer.id],
                "to_user_id": target_id,
                "actor_id": actor.id if actor else None,
                "via": via,
                "batch_id": batch_id,
                "reason": reason,
                "created_at": now,
                "opened_at": None,  # set by `start_ladders` below, before the row is inserted
                "open_due_at": None,
            }
        )
        result.changed.append(customer)
    updates: list[dict[str, object]] = []
    if result.changed:
        refresh_deadlines(session, result.changed, now, rules, updates, backoffs)
        # The ladder's times go in with the history rows (no UPDATE of the rows once inserted).
        rows = {cast(int, row["customer_id"]): row for row in history}
        start_ladders(session, result.changed, now, actor.id if actor else None, updates, history=rows)
    if history:
        # A Core INSERT on the table, built once: the ORM's bulk-insert pass did the same work per call (the
        # statement built and cache-keyed, the rows grouped by their keys). Nothing is pending here: `_move_to`
        # flushed before its UPDATE, and nothing has been added since.
        if history_at_last_step:
            insert_at_last_step(session, _HISTORY_INSERT, history)
        else:
            session.execute(_HISTORY_INSERT, history)
    if result.changed:
        write_lead_updates(session, result.changed, updates)
    if result.changed and notify:
        change = Change(ctx, actor, via, batch_id, now)
        items = notifications_for(session, change, result.changed, previous, digest=digest, reason=reason)
        result.people = list({i.recipient.id: i.recipient for i in items}.values())
        result.notifications = write_notifications(session, ctx.settings, ctx.signals, items, now)
    return result


def notify_batch(
    ctx: AppContext, session: Session, batch_id: str, via: str, now: datetime, actor: User | None = None
) -> list[Notification]:
    """Tell everyone who gained or lost leads in a batch moved with `notify=False`: one notice each for their
    gains and one for their losses (a digest when several leads), in the caller's transaction.

    Read from the batch's history rows, so it can be called again (after a crash) without telling anyone
    twice. A lead that moved more than once in the batch (to a pool, then routed on) counts from whom it was
    taken first to where it is now.
    """
    rows = session.execute(
        select(
            Assignment.customer_id, Assignment.from_user_id, Assignment.to_user_id, Assignment.reason, Assignment.via
        )
        .where(Assignment.batch_id == batch_id)
        .order_by(Assignment.id)
        .execution_options(yield_per=5000)  # a run may move a great many leads: streamed, kept as numbers
    )
    texts: dict[str | None, str | None] = {}
    taken_from: dict[int, tuple[int | None, str | None]] = {}
    reached: dict[int, tuple[int | None, str]] = {}
    for cid, before, after, reason, how in rows:
        if cid not in taken_from:
            taken_from[cid] = (before, texts.setdefault(reason, reason))
        reached[cid] = (after, str(texts.setdefault(how, how)))
    if not reached:
        return []
    moves = BatchMoves(gained=defaultdict(list), lost=defaultdict(list))
    for cid in sorted(reached):
        before, why = taken_from[cid]
        after, how = reached[cid]
        if after is not None and after != before:
            moves.gained[after].append((cid, how, before))
        if before is not None and before != (actor.id if actor else None) and before != after:
            moves.lost[before].append((cid, why))
    shown = sorted(moves.shown())
    leads = {
        c.id: c
        for start in range(0, len(shown), 5000)
        for c in session.scalars(select(Customer).where(Customer.id.in_(shown[start : start + 5000])))
    }
    change = Change(ctx, actor, via, batch_id, now)
    items = batch_notifications(session, change, moves, leads, key=batch_id)
    return write_notifications(session, ctx.settings, ctx.signals, items, now)


def history(session: Session, actor: User, customer_id: int) -> list[AssignmentOut]:
    """Every ownership change of one lead the actor may see (404 otherwise), newest first."""
    get_visible(session, actor, customer_id)
    rows = session.scalars(
        select(Assignment).where(Assignment.customer_id == customer_id).order_by(Assignment.id.desc())
    ).all()
    names = users_by_id(
        session, {r.from_user_id for r in rows} | {r.to_user_id for r in rows} | {r.actor_id for r in rows}
    )

    def name(uid: int | None) -> str | None:
        return names[uid].name if uid in names else None

    return [
        AssignmentOut(
            id=r.id,
            customer_id=r.customer_id,
            from_user_id=r.from_user_id,
            from_user_name=name(r.from_user_id),
            to_user_id=r.to_user_id,
            to_user_name=name(r.to_user_id),
            actor_id=r.actor_id,
            actor_name=name(r.actor_id),
            via=r.via,
            batch_id=r.batch_id,
            reason=r.reason,
            created_at=r.created_at,
        )
        for r in rows
    ]


def taken_back(session: Session, actor: User, customer_id: int) -> TakenBackOut | None:
    """How a lead `actor` cannot see any more left them: their last loss of it; None if it never was theirs.

    Only what they were told when it happened (when, how, by which rule or by whom, to the pool or to a
    colleague), never the lead as it is now nor who has it: they may no longer see it.
    """
    if not is_db_id(customer_id):
        return None
    row = session.scalars(
        select(Assignment)
        .where(Assignment.customer_id == customer_id, Assignment.from_user_id == actor.id)
        .order_by(Assignment.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    by = session.get(User, row.actor_id) if row.actor_id else None
    return TakenBackOut(
        customer_id=customer_id,
        taken_back_at=row.created_at,
        via=row.via,  # type: ignore[arg-type]  # one of VIAS, checked when written
        rule_name=rule_name_in(row.reason) if row.via == "auto_transfer" else None,
        actor_id=row.actor_id,
        actor_name=by.name if by else None,
        by_you=row.actor_id == actor.id,
        to_pool=row.to_user_id is None,
        reason=row.reason,
    )
