"""Saving and finding thousands of leads in a few statements, on SQLite and PostgreSQL.

The ORM's bulk INSERT ... RETURNING with the rows' order kept falls back to one statement per row on
SQLite, and on PostgreSQL spends most of its time in the driver expanding tens of thousands of named
parameters. So:

- PostgreSQL: one INSERT ... SELECT FROM unnest(<one array per column>) ORDER BY the rows' position,
  RETURNING the ids; ids come from the sequence in the SELECT's order, so sorted they are the rows' ids
  in input order. Lookups by many values pass one array (`= ANY(:values)`).
- SQLite: executemany without RETURNING. Writers hold the database's write lock for the whole transaction
  (BEGIN IMMEDIATE), and `customers.id` is the rowid (max + 1 for each new row), so the new rows are
  exactly those with an id above the largest before the insert, in input order.

Either way the new leads are then read back as ORM objects (one query) for routing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Integer, String, Table, any_, bindparam, func, insert, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import InstrumentedAttribute, Session

from leadpush.leads.models import Customer

CHUNK = 500

# The columns intake fills per row; the rest are the same for every row or NULL.
PER_ROW = ("name", "phone", "region", "tags", "note", "external_id", "duplicate_of_id")


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def matching(
    session: Session, column: InstrumentedAttribute[Any], values: Iterable[Any]
) -> Iterable[ColumnElement[bool]]:
    """Conditions `column IN values`: one array on PostgreSQL, chunks of at most CHUNK values on SQLite."""
    items = sorted({v for v in values if v is not None})
    if not items:
        return
    if is_postgres(session):
        kind = ARRAY(Integer) if isinstance(items[0], int) else ARRAY(String)
        yield column == any_(bindparam(None, items, type_=kind))
        return
    for start in range(0, len(items), CHUNK):
        yield column.in_(items[start : start + CHUNK])


def _naive_utc(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(tzinfo=None)


PG_INSERT = text(
    """
    INSERT INTO customers (name, phone, source, region, tags, status, note, owner_id, pool_id, pooled_at,
        created_by, external_id, intake_source_id, duplicate_of_id, version, created_at, updated_at)
    SELECT u.name, u.phone, :source, u.region, CAST(u.tags AS json), 'new', u.note, NULL, NULL, :now,
        NULL, u.external_id, :source_id, u.duplicate_of_id, 1, :now, :now
    FROM unnest(CAST(:names AS text[]), CAST(:phones AS text[]), CAST(:regions AS text[]),
                CAST(:tags AS text[]), CAST(:notes AS text[]), CAST(:external_ids AS text[]),
                CAST(:duplicate_of_ids AS integer[]))
         WITH ORDINALITY AS u(name, phone, region, tags, note, external_id, duplicate_of_id, position)
    ORDER BY u.position
    RETURNING id
    """
)


def insert_customers(
    session: Session, rows: Sequence[dict[str, Any]], *, source: str, source_id: int, now: datetime
) -> list[Customer]:
    """Insert new pooled leads (each row: PER_ROW's keys); the leads as ORM objects, in the rows' order."""
    if not rows:
        return []
    if is_postgres(session):
        params: dict[str, Any] = {
            "names": [r["name"] for r in rows],
            "phones": [r["phone"] for r in rows],
            "regions": [r["region"] for r in rows],
            "tags": [json.dumps(r["tags"], ensure_ascii=False) for r in rows],
            "notes": [r["note"] for r in rows],
            "external_ids": [r["external_id"] for r in rows],
            "duplicate_of_ids": [r["duplicate_of_id"] for r in rows],
            "source": source,
            "source_id": source_id,
            "now": _naive_utc(now),
        }
        ids = sorted(session.scalars(PG_INSERT, params))
    else:
        before = session.scalar(select(func.max(Customer.id))) or 0
        common = {
            "source": source,
            "status": "new",
            "owner_id": None,
            "pool_id": None,
            "pooled_at": now,
            "created_by": None,
            "intake_source_id": source_id,
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
        session.execute(
            insert(cast(Table, Customer.__table__)), [{**common, **{k: r[k] for k in PER_ROW}} for r in rows]
        )
        ids = list(session.scalars(select(Customer.id).where(Customer.id > before).order_by(Customer.id)))
    if len(ids) != len(rows):
        raise RuntimeError(f"inserted {len(rows)} leads but found {len(ids)} new ids")
    loaded: dict[int, Customer] = {}
    for condition in matching(session, Customer.id, ids):
        loaded.update((c.id, c) for c in session.scalars(select(Customer).where(condition)))
    return [loaded[i] for i in ids]
