"""HTTP routes for a user's notifications: polling (optionally long), unread count, read marks."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from leadpush.deps import Ctx, CurrentUser
from leadpush.notify import service
from leadpush.notify.ledger import unread_count
from leadpush.notify.schemas import MarkReadBody, NotificationPage, UnreadOut
from leadpush.schemas import Envelope

router = APIRouter(prefix="/api/notifications", tags=["notifications"])


@router.get("", response_model=Envelope[NotificationPage])
def poll(
    ctx: Ctx,
    user: CurrentUser,
    after: Annotated[int, Query(ge=0, description="只返回 id 大于此值的通知")] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Envelope:
    """The caller's notifications with id > after, oldest first."""
    with ctx.db.read() as session:
        rows = service.notifications_after(session, user.id, after, limit)
        unread = unread_count(session, user.id)
    items = [service.to_out(n) for n in rows]
    return Envelope(data=NotificationPage(items=items, last_id=items[-1].id if items else after, unread=unread))


@router.get("/unread-count", response_model=Envelope[UnreadOut])
def unread(ctx: Ctx, user: CurrentUser) -> Envelope:
    with ctx.db.read() as session:
        return Envelope(data=UnreadOut(unread=unread_count(session, user.id)))


@router.post("/read", response_model=Envelope[UnreadOut])
def mark_read(body: MarkReadBody, ctx: Ctx, user: CurrentUser) -> Envelope:
    """Mark the given notifications (or all) read."""
    with ctx.db.write() as session:
        service.mark(session, user.id, body.ids, ctx.clock.now(), read=True)
        count = unread_count(session, user.id)
    return Envelope(message="已标为已读", data=UnreadOut(unread=count))
