"""HTTP routes for a user's notifications (polling, long-polling, read marks) and the delivery ledger."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Query, Request

from leadpush.deps import AdminUser, Ctx, CurrentUser, StaffUser, bearer_token
from leadpush.errors import ApiError
from leadpush.notify import service
from leadpush.notify.hub import Waiter
from leadpush.notify.ledger import unread_count
from leadpush.notify.models import CHANNELS, STATUSES
from leadpush.notify.schemas import (
    DeliveryDetail,
    DeliveryOut,
    DeliveryPage,
    MarkReadBody,
    NotificationPage,
    UnreadOut,
)
from leadpush.schemas import Envelope
from leadpush.users.service import MAX_ID, hash_token

router = APIRouter(tags=["notifications"])

MAX_WAIT = 30


@router.get("/api/notifications", response_model=Envelope[NotificationPage])
async def poll(
    request: Request,
    ctx: Ctx,
    user: CurrentUser,
    after: Annotated[int, Query(ge=0, le=MAX_ID, description="只返回 id 大于此值的通知")] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT, description="没有新通知时最多等待的秒数（长轮询）")] = 0,
) -> Envelope:
    """The caller's notifications with id > after, oldest first; with `wait`, a long poll.

    At most LEADPUSH_LONGPOLL_MAX_PER_USER long polls of one user wait at a time on a process (429 beyond);
    one whose token is revoked (or whose user is deactivated) meanwhile ends at once with 401.
    """

    def read() -> NotificationPage:
        with ctx.db.read() as session:
            rows = service.notifications_after(session, user.id, after, limit)
            unread = unread_count(session, user.id)
        items = [service.to_out(n) for n in rows]
        return NotificationPage(items=items, last_id=items[-1].id if items else after, unread=unread)

    page = await to_thread.run_sync(read)
    if page.items or wait <= 0:
        return Envelope(data=page)
    hub = request.app.state.runtime.hub
    # The headers, not the request: a Request is itself a Mapping (of its ASGI scope), where "authorization"
    # is never found; the waiter would then hold the hash of "" and every token check would end it with 401.
    waiter = Waiter(hash_token(bearer_token(request.headers) or ""))
    if not hub.try_register(user.id, waiter, ctx.settings.longpoll_max_per_user):
        raise ApiError(429, "too_many_polls", "同时等待的长轮询过多，请稍后再试")
    deadline = time.monotonic() + wait
    try:
        page = await to_thread.run_sync(read)  # re-check: something may have landed while registering
        # A wake-up is a hint (it may be about something this poll already has): keep waiting until a
        # read finds something new or the time is up, rather than answering early and empty.
        while not page.items:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            waiter.event.clear()
            try:
                await asyncio.wait_for(waiter.event.wait(), timeout=remaining)
            except TimeoutError:
                break
            if waiter.ended:
                break
            page = await to_thread.run_sync(read)
    finally:
        hub.unregister(user.id, waiter)
    if waiter.ended:
        raise ApiError(401, "invalid_token", "登录凭证无效或已失效")
    return Envelope(data=page)


@router.get("/api/notifications/unread-count", response_model=Envelope[UnreadOut])
def unread(ctx: Ctx, user: CurrentUser) -> Envelope:
    with ctx.db.read() as session:
        return Envelope(data=UnreadOut(unread=unread_count(session, user.id)))


@router.post("/api/notifications/read", response_model=Envelope[UnreadOut])
def mark_read(body: MarkReadBody, ctx: Ctx, user: CurrentUser) -> Envelope:
    """Mark the given notifications (or all) read."""
    with ctx.db.write() as session:
        service.mark(session, user.id, body.ids, ctx.clock.now(), read=True, signals=ctx.signals)
        count = unread_count(session, user.id)
    return Envelope(message="已标为已读", data=UnreadOut(unread=count))


@router.post("/api/notifications/ack", response_model=Envelope[UnreadOut])
def ack(body: MarkReadBody, ctx: Ctx, user: CurrentUser) -> Envelope:
    """Mark the given notifications (or all) delivered: the client has shown them."""
    with ctx.db.write() as session:
        service.mark(session, user.id, body.ids, ctx.clock.now(), read=False, signals=ctx.signals)
        count = unread_count(session, user.id)
    return Envelope(message="已确认送达", data=UnreadOut(unread=count))


@router.get("/api/deliveries", response_model=Envelope[DeliveryPage])
def list_deliveries(
    ctx: Ctx,
    user: StaffUser,
    status: Annotated[str | None, Query(description=" / ".join(STATUSES))] = None,
    channel: Annotated[str | None, Query(description=" / ".join(CHANNELS))] = None,
    user_id: Annotated[int | None, Query(alias="userId", ge=1, le=MAX_ID)] = None,
    notification_id: Annotated[int | None, Query(alias="notificationId", ge=1, le=MAX_ID)] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    page_size: Annotated[int, Query(alias="pageSize", ge=1, le=200)] = 50,
) -> Envelope:
    """The delivery ledger (admins: everyone; managers: their team), newest first."""
    if status is not None and status not in STATUSES:
        raise ApiError(422, "invalid_filter", f"status 必须是 {' / '.join(STATUSES)} 之一")
    if channel is not None and channel not in CHANNELS:
        raise ApiError(422, "invalid_filter", f"channel 必须是 {' / '.join(CHANNELS)} 之一")
    filters = service.DeliveryFilters(status, channel, user_id, notification_id)
    with ctx.db.read() as session:
        items, total = service.list_deliveries(session, user, filters, page, page_size)
    return Envelope(data=DeliveryPage(items=items, total=total, page=page, page_size=page_size))


@router.get("/api/deliveries/{delivery_id:int}", response_model=Envelope[DeliveryDetail])
def delivery_detail(delivery_id: int, ctx: Ctx, user: StaffUser) -> Envelope:
    """One delivery and every attempt to send it, oldest first (admins: everyone's; managers: their team's)."""
    with ctx.db.read() as session:
        return Envelope(data=service.delivery_detail(session, user, delivery_id))


@router.post("/api/deliveries/{delivery_id:int}/retry", response_model=Envelope[DeliveryOut])
def retry_delivery(delivery_id: int, ctx: Ctx, admin: AdminUser) -> Envelope:
    """Send a dead (or failed) delivery again, with a fresh set of attempts."""
    with ctx.db.write() as session:
        out = service.retry_delivery(session, ctx.signals, delivery_id, ctx.clock.now())
    return Envelope(message="已重新加入发送队列", data=out)
