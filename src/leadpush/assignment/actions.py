"""The user-facing ownership actions: create (and import) leads, assign one, assign a batch, claim, release.

One function per thing a user does, and the only door to it: each checks who may do what, then hands
the work to `change_owner`, the one path, in the caller's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Select, bindparam, case, exists, func, select
from sqlalchemy.orm import Session, aliased

from leadpush.assignment.models import Assignment
from leadpush.assignment.service import ChangeResult, ItemFailure, Move, change_owner, lock_users, raise_failure
from leadpush.context import AppContext
from leadpush.errors import ApiError, forbidden, not_found
from leadpush.leads import importing
from leadpush.leads.models import Customer
from leadpush.leads.schemas import CustomerCreate, ImportResult
from leadpush.leads.service import get_visible
from leadpush.leads.sheets import Sheet
from leadpush.permissions import can_see, check_can_assign, check_can_release
from leadpush.pools.access import may_hand_out, may_use
from leadpush.pools.models import Pool, PoolMember
from leadpush.pools.service import pool_for_owner, pools_by_id, record_claim, rules_of
from leadpush.routing import hooks as routing
from leadpush.transfer.models import TransferBackoff
from leadpush.transfer.pool_rules import check_claim_allowed, hand_out_cooldowns
from leadpush.users.models import User
from leadpush.users.service import get_assignee, is_db_id, users_by_id

SALES_MAY_NOT_ASSIGN = "销售人员不能分配线索，请从公海领取"


def check_may_hand_out_at_all(session: Session, actor: User) -> None:
    """Salespeople assign nothing, unless they are the admin of a pool (then only that pool's leads)."""
    if actor.role == "sales" and not session.scalar(
        select(exists().where(PoolMember.user_id == actor.id, PoolMember.role == "admin"))
    ):
        raise forbidden(SALES_MAY_NOT_ASSIGN)


def check_can_give(session: Session, actor: User, customer: Customer, owner: User | None, target: User) -> None:
    """Whether `actor` may give this lead to `target`: a lead in a pool row by the pool's rights (its admins,
    its team's managers, admins; to a person who may use the pool), any other by the team rules."""
    pool = session.get(Pool, customer.pool_id) if customer.owner_id is None and customer.pool_id else None
    if pool is None:
        check_can_assign(actor, owner, target)
        return
    if not may_hand_out(session, actor, pool):
        raise forbidden(f"只有线索池「{pool.name}」的管理员、团队经理和系统管理员可以分配其中的线索")
    if actor.role != "admin" and not may_use(session, target, pool):
        raise forbidden(f"{target.name} 不是线索池「{pool.name}」的成员，不能分配给 TA")


@cache
def _preload_statement() -> Select[Customer, User, User, datetime | None, bool]:
    """Built once: comparing columns of an `aliased` entity adapts them, which cost more CPU than running the
    statement (issue 17); the ids are bound per call.

    Two questions ride along, each saving a statement of its own: `last_lost`, when the assignee last lost the
    lead (the pool cooldown's question: `lost_since` for this one lead and person), asked only of a lead in a
    pool (the CASE skips the subquery for an owned one); and `has_backoff`, whether the automatic transfer
    holds a backoff for the lead (almost never: then `refresh_deadlines` need not look for one to drop)."""
    owner, target = aliased(User), aliased(User)
    lost = (
        select(func.max(Assignment.created_at))
        .where(Assignment.customer_id == Customer.id, Assignment.from_user_id == bindparam("assignee_id"))
        .correlate(Customer)
        .scalar_subquery()
    )
    return (
        select(
            Customer,
            owner,
            target,
            case((Customer.owner_id.is_(None), lost)).label("last_lost"),
            exists().where(TransferBackoff.customer_id == Customer.id).label("has_backoff"),
        )
        .outerjoin(owner, owner.id == Customer.owner_id)
        .outerjoin(target, target.id == bindparam("assignee_id"))
        .where(Customer.id == bindparam("customer_id"))
    )


def preload(session: Session, customer_id: int, assignee_id: int) -> Any:
    """The lead, its owner and the assignee in one statement, into the session: `get_visible` and `get_assignee`
    then find them in hand; and `last_lost` (None: never, or the lead is owned) and `has_backoff` (see
    `_preload_statement`). Keep the row while they are used (the session holds its objects weakly)."""
    if not (is_db_id(customer_id) and is_db_id(assignee_id)):
        return None
    return session.execute(_preload_statement(), {"customer_id": customer_id, "assignee_id": assignee_id}).first()


def assign_one(
    ctx: AppContext,
    session: Session,
    actor: User,
    customer_id: int,
    assignee_id: int,
    via: str,
    expected_version: int | None = None,
) -> ChangeResult:
    check_may_hand_out_at_all(session, actor)
    in_hand = preload(session, customer_id, assignee_id)  # held: the checks below find them in hand
    customer, owner = get_visible(session, actor, customer_id)
    target = get_assignee(session, assignee_id)
    check_can_give(session, actor, customer, owner, target)
    if expected_version is not None and expected_version != customer.version:
        raise ApiError(409, "version_conflict", "线索已被他人修改，请刷新后重试")
    # When the assignee last lost this lead came with the preload (the row is this lead and this assignee).
    last_lost = in_hand.last_lost if in_hand is not None else None
    lost = {customer.id: {target.id: last_lost}} if last_lost is not None else {}
    blocked = hand_out_cooldowns(
        session, ctx.settings, [customer], pools_by_id(session, [customer.pool_id]), target, ctx.clock.now(), lost
    )
    if customer.id in blocked:
        raise ApiError(409, "previous_owner_cooldown", blocked[customer.id])
    # No backoff to drop (the preload saw none): the deadline's refresh reads none.
    backoffs: dict[int, TransferBackoff] | None = None if in_hand is None or in_hand.has_backoff else {}
    move = Move(customer, target, expected_version)
    # Nothing reads the history row before the commit on this route: it goes in the ledger's last step.
    result = change_owner(
        ctx, session, actor=actor, moves=[move], via=via, backoffs=backoffs, history_at_last_step=True
    )
    if result.failed:
        raise_failure(result.failed[0])
    return result


@dataclass
class BatchInput:
    customer_ids: list[int]
    assignee_id: int


def check_batch(ctx: AppContext, ids: list[int]) -> list[int]:
    if not ids:
        raise ApiError(422, "batch_empty", "customerIds 不能为空")
    if len(ids) > ctx.settings.max_batch:
        raise ApiError(422, "batch_too_large", f"一次最多分配 {ctx.settings.max_batch} 条线索")
    return list(dict.fromkeys(ids))


def assign_batch(ctx: AppContext, session: Session, actor: User, batch: BatchInput, *, from_pool: bool) -> ChangeResult:
    """Assign many leads to one person; what cannot be done is reported per item, the rest is done."""
    check_may_hand_out_at_all(session, actor)
    ids = check_batch(ctx, batch.customer_ids)
    target = get_assignee(session, batch.assignee_id)
    if actor.role != "sales":
        check_can_assign(actor, None, target)  # the whole batch goes to one person: check them once
    real_ids = [i for i in ids if is_db_id(i)]
    customers = {c.id: c for c in session.scalars(select(Customer).where(Customer.id.in_(real_ids)))}
    owners = users_by_id(session, {c.owner_id for c in customers.values()})
    blocked = hand_out_cooldowns(
        session,
        ctx.settings,
        list(customers.values()),
        pools_by_id(session, {c.pool_id for c in customers.values()}),
        target,
        ctx.clock.now(),
    )
    moves: list[Move] = []
    failed: list[ItemFailure] = []
    for cid in ids:
        customer = customers.get(cid)
        owner = owners.get(customer.owner_id) if customer and customer.owner_id else None
        if customer is None or not can_see(session, actor, customer, owner):
            failed.append(ItemFailure(cid, "customer_not_found", "线索不存在"))
            continue
        # A lead already with the target is "unchanged" (a retried pool assignment succeeds quietly).
        if from_pool and customer.owner_id not in (None, target.id):
            failed.append(ItemFailure(cid, "not_in_pool", "线索不在公海中"))
            continue
        try:
            check_can_give(session, actor, customer, owner, target)
        except ApiError as exc:
            failed.append(ItemFailure(cid, "forbidden", exc.message))
            continue
        if cid in blocked and customer.owner_id is None:
            failed.append(ItemFailure(cid, "previous_owner_cooldown", blocked[cid]))
            continue
        moves.append(Move(customer, target))
    result = change_owner(
        ctx, session, actor=actor, moves=moves, via="public_pool" if from_pool else "batch", digest=True
    )
    result.failed = failed + result.failed
    return result


def claim(ctx: AppContext, session: Session, actor: User, customer_id: int) -> ChangeResult:
    customer = session.get(Customer, customer_id) if is_db_id(customer_id) else None
    if customer is None:
        raise not_found("customer")
    if customer.owner_id == actor.id:
        return ChangeResult(batch_id=None, unchanged=[customer])
    if customer.owner_id is not None:
        # Salespeople race for pool leads: whoever lost sees "already claimed" (409), whether the winner is
        # someone they can see or not — on every database, not a 404 for a lead that was on their screen.
        raise ApiError(409, "not_in_pool", "该线索已被他人领取")
    pool = session.get(Pool, customer.pool_id) if customer.pool_id else None
    if not may_use(session, actor, pool):
        raise not_found("customer")
    if rules_of(ctx.settings, pool).claim_daily_limit > 0:
        # The claimer's row is held until commit, so their concurrent claims are counted one after the other.
        lock_users(session, [actor.id])
    now = ctx.clock.now()
    check_claim_allowed(session, ctx.settings, actor, customer, pool, now)
    from_pool = customer.pool_id
    result = change_owner(ctx, session, actor=actor, moves=[Move(customer, actor)], via="claim", now=now)
    if result.failed:
        if result.failed[0].code == "version_conflict":  # someone claimed it since it was read
            raise ApiError(409, "not_in_pool", "该线索已被他人领取")
        raise_failure(result.failed[0])
    record_claim(session, from_pool, actor.id, customer.id, now)
    return result


def release(ctx: AppContext, session: Session, actor: User, customer_id: int, reason: str | None) -> ChangeResult:
    customer, owner = get_visible(session, actor, customer_id)
    check_can_release(actor, owner)
    # Back to the owner's team pool when the team has one, else to the company pool.
    move = Move(customer, None, to_pool=pool_for_owner(session, owner))
    result = change_owner(ctx, session, actor=actor, moves=[move], via="release", reason=reason)
    if result.failed:
        raise_failure(result.failed[0])
    if result.changed:
        routing.route_returned_leads(ctx, session, result.changed, via="release")
    return result


def check_can_create_for(actor: User, target: User) -> None:
    if actor.role == "sales":
        if target.id != actor.id:
            raise ApiError(403, "forbidden", "销售人员只能把新线索分配给自己")
        return
    check_can_assign(actor, None, target)


def create_customers(ctx: AppContext, session: Session, actor: User, items: list[CustomerCreate]) -> list[Customer]:
    """Insert leads (in the pool unless assignedTo is given); assigned ones go through change_owner."""
    if not items:
        raise ApiError(422, "batch_empty", "线索列表不能为空")
    if len(items) > ctx.settings.max_batch:
        raise ApiError(422, "batch_too_large", f"一次最多创建 {ctx.settings.max_batch} 条线索")
    targets = users_by_id(session, {i.assigned_to for i in items})
    for item in items:
        if item.assigned_to is not None:
            if item.assigned_to not in targets:
                raise ApiError(404, "user_not_found", f"用户 {item.assigned_to} 不存在")
            check_can_create_for(actor, targets[item.assigned_to])
    now = ctx.clock.now()
    customers = [
        Customer(
            name=i.name,
            phone=i.phone,
            source=i.source,
            region=i.region,
            tags=i.tags,
            status=i.status,
            note=i.note,
            owner_id=None,
            pooled_at=now,
            created_by=actor.id,
            version=1,
            created_at=now,
            updated_at=now,
        )
        for i in items
    ]
    session.add_all(customers)
    session.flush()
    # Routing first: it locks its rules, then the people it counts (capacity); the explicit assignments lock
    # people only. One order (rules before people) in every transaction, so two never wait on each other.
    unowned = [c for c, i in zip(customers, items, strict=True) if not i.assigned_to]
    if unowned:
        routing.route_new_leads(ctx, session, unowned, actor=actor)
    moves = [Move(c, targets[i.assigned_to]) for c, i in zip(customers, items, strict=True) if i.assigned_to]
    if moves:
        result = change_owner(
            ctx, session, actor=actor, moves=moves, via="web" if len(items) == 1 else "batch", digest=len(items) > 1
        )
        if result.failed:
            raise_failure(result.failed[0])
    return customers


def import_customers(ctx: AppContext, session: Session, actor: User, sheet: Sheet, *, dry_run: bool) -> ImportResult:
    """Check every row of an imported sheet; unless `dry_run`, create the valid ones in this transaction
    through `create_customers` (so assignments are checked again, recorded and notified as usual, a batch
    as one digest per person), and report the created ids and the skipped rows."""
    if actor.role not in ("admin", "manager"):
        raise forbidden("只有管理员和经理可以批量导入线索")
    columns = importing.map_columns(sheet)
    rows = importing.check_rows(session, actor, sheet, columns)
    valid = [r for r in rows if r.item is not None]
    result = ImportResult(
        dry_run=dry_run,
        format=sheet.format,
        header_row=sheet.header.number,
        columns=columns.found,
        ignored_columns=columns.ignored,
        total=len(rows),
        valid=len(valid),
        invalid=len(rows) - len(valid),
        rows=[r.out for r in rows],
    )
    if dry_run:
        return result
    if not valid:
        raise ApiError(
            422, "import_nothing_valid", "没有可导入的行：请先改正表格中的错误", result.model_dump(by_alias=True)
        )
    created = create_customers(ctx, session, actor, [r.item for r in valid if r.item is not None])
    for row, customer in zip(valid, created, strict=True):
        row.out.customer_id = customer.id
    result.created = [c.id for c in created]
    result.skipped = [r.out.row for r in rows if r.item is None]
    return result
