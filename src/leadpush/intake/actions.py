"""Receiving leads from a lead source: one lead or a campaign burst, in the caller's transaction.

Every item is mapped and checked first; the valid ones are then saved in bulk (one INSERT ... RETURNING
per thousand rows, no per-row round trips), the invalid ones reported by their index. Per item:

- a repeat of an external id already received from this source (a created lead, or a recorded merge)
  answers that lead with `duplicate: "external_id"` and saves nothing;
- a phone that matches an open lead (status new or following; the newest if several) is a duplicate:
  with the source's policy `merge` the submission is appended to that lead's note and its owner is told
  (`lead_duplicate`); with `flag` a new lead is created with `duplicate_of_id` set;
- everything else becomes a new lead in the company pool, handed to routing (`route_new_leads`) in the
  same transaction.

Within one request the same rules hold between items: a later item with an earlier one's external id
answers that item's lead; a later item with an earlier one's phone merges into (or is flagged against) it.

Concurrent repeats: the unique indexes on (source, external id) make the second insert fail; the caller
runs the whole intake again (`intake_with_retry` in the views), which then finds the first one's lead.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, insert, select, update
from sqlalchemy.orm import Session

from leadpush.context import AppContext
from leadpush.intake.bulk import insert_customers, matching
from leadpush.intake.mapping import Defaults, LeadIn, read_lead
from leadpush.intake.messaging import asked_again
from leadpush.intake.models import IntakeMerge, LeadSource
from leadpush.intake.schemas import FieldIssue, InboundItemOut
from leadpush.leads.models import Customer
from leadpush.notify.ledger import NewNotification, write_notifications
from leadpush.routing import hooks as routing
from leadpush.users.service import users_by_id

OPEN_STATUSES = ("new", "following")
# A merged lead's note stops growing here (a form resubmitted in a loop must not grow one row forever).
NOTE_CEILING = 20_000


@dataclass
class Known:
    """A lead an external id or a phone already points at."""

    customer_id: int
    owner_id: int | None
    name: str = ""
    phone: str = ""
    merged: bool = False


@dataclass
class Plan:
    """What this request will do, item by item, before anything is written."""

    creates: list[tuple[int, LeadIn]] = field(default_factory=list)
    # item index -> the index of the earlier item whose new lead it is flagged against / merged into
    flagged_in_batch: dict[int, int] = field(default_factory=dict)
    merged_in_batch: dict[int, int] = field(default_factory=dict)
    flagged: dict[int, Known] = field(default_factory=dict)  # item index -> existing open lead
    merged: dict[int, Known] = field(default_factory=dict)
    repeats_in_batch: dict[int, int] = field(default_factory=dict)  # item index -> earlier item index


def known_external_ids(session: Session, source_id: int, external_ids: Sequence[str]) -> dict[str, Known]:
    """The leads this source's external ids already stand for: created from them, or merged into."""
    found: dict[str, Known] = {}
    for condition in matching(session, Customer.external_id, external_ids):
        query = select(Customer.external_id, Customer.id, Customer.owner_id).where(
            Customer.intake_source_id == source_id, condition
        )
        found.update((ext, Known(cid, owner)) for ext, cid, owner in session.execute(query) if ext is not None)
    for condition in matching(session, IntakeMerge.external_id, external_ids):
        query = (
            select(IntakeMerge.external_id, Customer.id, Customer.owner_id)
            .join(Customer, Customer.id == IntakeMerge.customer_id)
            .where(IntakeMerge.source_id == source_id, condition)
        )
        for ext, cid, owner in session.execute(query):
            found.setdefault(ext, Known(cid, owner, merged=True))
    return found


def open_leads_by_phone(session: Session, phones: Iterable[str]) -> dict[str, Known]:
    """Per phone, the newest open lead (new or following) with it."""
    found: dict[str, Known] = {}
    for condition in matching(session, Customer.phone, phones):
        rows = session.execute(
            select(Customer.phone, Customer.id, Customer.owner_id, Customer.name)
            .where(condition, Customer.status.in_(OPEN_STATUSES))
            .order_by(Customer.id)
        )
        for phone, cid, owner, name in rows:
            found[phone] = Known(cid, owner, name, phone)
    return found


def plan(session: Session, source: LeadSource, leads: list[tuple[int, LeadIn]], results: list[InboundItemOut]) -> Plan:
    out = Plan()
    known = known_external_ids(session, source.id, [lead.external_id for _, lead in leads if lead.external_id])
    first_with_ext: dict[str, int] = {}
    fresh: list[tuple[int, LeadIn]] = []
    for index, lead in leads:
        ext = lead.external_id
        if ext is not None and ext in known:
            hit = known[ext]
            results[index] = InboundItemOut(
                index=index,
                ok=True,
                customer_id=hit.customer_id,
                duplicate="external_id",
                merged=hit.merged,
                owner_id=hit.owner_id,
            )
        elif ext is not None and ext in first_with_ext:
            out.repeats_in_batch[index] = first_with_ext[ext]
        else:
            if ext is not None:
                first_with_ext[ext] = index
            fresh.append((index, lead))
    by_phone = open_leads_by_phone(session, (lead.phone for _, lead in fresh))
    first_with_phone: dict[str, int] = {}
    merge = source.duplicate_policy == "merge"
    for index, lead in fresh:
        existing = by_phone.get(lead.phone)
        earlier = first_with_phone.get(lead.phone)
        if existing is not None:
            if merge:
                out.merged[index] = existing
            else:
                out.creates.append((index, lead))
                out.flagged[index] = existing
        elif earlier is not None:
            if merge:
                out.merged_in_batch[index] = earlier
            else:
                out.creates.append((index, lead))
                out.flagged_in_batch[index] = earlier
        else:
            first_with_phone[lead.phone] = index
            out.creates.append((index, lead))
    return out


def local_time(ctx: AppContext, when: datetime) -> str:
    return when.astimezone(ctx.settings.tz).strftime("%Y-%m-%d %H:%M")


def merge_text(ctx: AppContext, source: LeadSource, lead: LeadIn, when: datetime) -> str:
    """What a merged submission adds to the lead's note."""
    facts = [f"姓名：{lead.name}", f"电话：{lead.phone}"]
    if lead.region:
        facts.append(f"地区：{lead.region}")
    if lead.tags:
        facts.append(f"标签：{'、'.join(lead.tags)}")
    text = f"【{local_time(ctx, when)} 再次咨询 · {source.name}】" + "；".join(facts)
    return text + ("\n" + lead.note if lead.note else "")


def _append(note: str, more: str) -> str:
    return f"{note}\n\n{more}" if note else more


def _insert(
    session: Session, source: LeadSource, rows: Sequence[tuple[LeadIn, int | None]], now: datetime
) -> list[Customer]:
    """New leads in bulk (see intake.bulk), as ORM objects in this session, in order."""
    values = [
        {
            "name": lead.name,
            "phone": lead.phone,
            "region": lead.region,
            "tags": lead.tags,
            "note": lead.note,
            "external_id": lead.external_id,
            "duplicate_of_id": duplicate_of,
        }
        for lead, duplicate_of in rows
    ]
    return insert_customers(session, values, source=source.key, source_id=source.id, now=now)


def _merge_into_existing(
    ctx: AppContext,
    session: Session,
    source: LeadSource,
    merges: dict[int, Known],
    leads: dict[int, LeadIn],
    now: datetime,
) -> list[NewNotification]:
    """Append each merged submission to its lead's note; one notice per lead to its owner."""
    by_lead: dict[int, list[int]] = defaultdict(list)
    for index, known in merges.items():
        by_lead[known.customer_id].append(index)
    targets = {k.customer_id: k for k in merges.values()}
    owners = users_by_id(session, {k.owner_id for k in targets.values()})
    notices: list[NewNotification] = []
    for customer_id, indexes in by_lead.items():
        more = "\n\n".join(merge_text(ctx, source, leads[i], now) for i in indexes)
        session.execute(
            update(Customer)
            .where(Customer.id == customer_id, func.length(Customer.note) < NOTE_CEILING)
            .values(note=case((Customer.note == "", more), else_=Customer.note + ("\n\n" + more)), updated_at=now)
            .execution_options(synchronize_session=False)
        )
        target = targets[customer_id]
        owner = owners.get(target.owner_id) if target.owner_id is not None else None
        if owner is not None:
            notices.append(
                asked_again(
                    owner,
                    customer_id=customer_id,
                    customer_name=target.name,
                    customer_phone=target.phone,
                    source_key=source.key,
                    source_name=source.name,
                    times=len(indexes),
                    when=now,
                )
            )
    return notices


def _record_merges(
    session: Session, source: LeadSource, merged: dict[int, int], leads: dict[int, LeadIn], now: datetime
) -> None:
    """Remember merged submissions by external id, so that their repeats answer the same lead."""
    rows = [
        {"source_id": source.id, "external_id": leads[i].external_id, "customer_id": cid, "created_at": now}
        for i, cid in merged.items()
        if leads[i].external_id is not None
    ]
    if rows:
        session.execute(insert(IntakeMerge), rows)


def receive_leads(
    ctx: AppContext,
    session: Session,
    source: LeadSource,
    raws: Sequence[Any],
    *,
    fallback_external_id: str | None = None,
) -> list[InboundItemOut]:
    """Map, check and save inbound leads of one source; one answer per item, in order.

    `fallback_external_id` (the form webhook: a hash of the body) stands in for an item's external id when
    the source sent none, so that a replayed submission is answered, not saved twice."""
    now = ctx.clock.now()
    defaults = Defaults(source.default_region, list(source.default_tags or []))
    mapping = dict(source.field_mapping or {})
    results: list[InboundItemOut] = [InboundItemOut(index=i, ok=False) for i in range(len(raws))]
    leads: list[tuple[int, LeadIn]] = []
    for index, raw in enumerate(raws):
        read = read_lead(raw, mapping, defaults)
        if isinstance(read, list):
            results[index].errors = [FieldIssue(field=i.field, message=i.message) for i in read]
        else:
            if read.external_id is None:
                read.external_id = fallback_external_id
            leads.append((index, read))
    if not leads:
        return results
    by_index = dict(leads)
    todo = plan(session, source, leads, results)

    # Submissions merged into a lead this request creates are folded into its note before the insert.
    for index, earlier in todo.merged_in_batch.items():
        target = by_index[earlier]
        target.note = _append(target.note, merge_text(ctx, source, by_index[index], now))

    first = [(i, lead) for i, lead in todo.creates if i not in todo.flagged_in_batch]
    second = [(i, lead) for i, lead in todo.creates if i in todo.flagged_in_batch]
    created: dict[int, Customer] = {}
    rows_a = [(lead, todo.flagged[i].customer_id if i in todo.flagged else None) for i, lead in first]
    created.update(zip((i for i, _ in first), _insert(session, source, rows_a, now), strict=True))
    rows_b = [(lead, created[todo.flagged_in_batch[i]].id) for i, lead in second]
    created.update(zip((i for i, _ in second), _insert(session, source, rows_b, now), strict=True))

    notices = _merge_into_existing(ctx, session, source, todo.merged, by_index, now)
    merged_ids = {i: k.customer_id for i, k in todo.merged.items()}
    merged_ids.update({i: created[e].id for i, e in todo.merged_in_batch.items()})
    _record_merges(session, source, merged_ids, by_index, now)
    if notices:
        write_notifications(session, ctx.settings, ctx.signals, notices, now)

    new_leads = [created[i] for i, _ in todo.creates]
    if new_leads:
        session.flush()
        routing.route_new_leads(ctx, session, new_leads, actor=None)

    for index, customer in created.items():
        flagged = todo.flagged.get(index)
        results[index] = InboundItemOut(
            index=index,
            ok=True,
            customer_id=customer.id,
            created=True,
            duplicate="phone" if customer.duplicate_of_id is not None else None,
            duplicate_of=customer.duplicate_of_id if flagged is None else flagged.customer_id,
            owner_id=customer.owner_id,
        )
    for index, known in todo.merged.items():
        results[index] = InboundItemOut(
            index=index, ok=True, customer_id=known.customer_id, duplicate="phone", merged=True, owner_id=known.owner_id
        )
    for index, earlier in todo.merged_in_batch.items():
        customer = created[earlier]
        results[index] = InboundItemOut(
            index=index, ok=True, customer_id=customer.id, duplicate="phone", merged=True, owner_id=customer.owner_id
        )
    for index, earlier in todo.repeats_in_batch.items():
        first_answer = results[earlier]
        results[index] = first_answer.model_copy(update={"index": index, "created": False, "duplicate": "external_id"})
    return results
