"""The background roles a process hosts: the bus, the WebSocket hub (api), dispatcher (worker), scheduler.

`leadpush serve` runs all three roles in one process; `--role` splits them across processes, which
then meet through the database (the ledger) and Redis (wake-ups and fan-out).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from anyio import to_thread

from leadpush.context import AppContext
from leadpush.gcfreeze import GcFreeze, GcPauses
from leadpush.notify.bus import Bus, make_bus
from leadpush.notify.channels.base import Channel
from leadpush.notify.channels.inapp import InAppChannel
from leadpush.notify.channels.webhook import WebhookChannel
from leadpush.notify.dispatcher import Dispatcher
from leadpush.notify.fallback import FallbackChannel
from leadpush.notify.hub import Hub
from leadpush.notify.metrics import LedgerCollector, Metrics
from leadpush.notify.signals import EVERYONE, NOBODY, Pushed, Wake
from leadpush.notify.workers import Heartbeat
from leadpush.notify.ws import read_after_many
from leadpush.sla.acks import opened_by_ack
from leadpush.transfer.scheduler import TransferScheduler
from leadpush.users import authcache
from leadpush.users.service import valid_token_hashes
from leadpush.wechat import channel as wechat_channel
from leadpush.wecom import channel as wecom_channel

log = logging.getLogger(__name__)

HINT_RETRY_FIRST, HINT_RETRY_MAX = 0.2, 5.0  # seconds between tries of a hint Redis did not take

# The outside platforms: each vendor folder builds its channel, or None when it is not configured.
VENDOR_CHANNELS: tuple[Callable[[AppContext], Channel | None], ...] = (
    wechat_channel.build_channel,
    wecom_channel.build_channel,
)


def build_channels(ctx: AppContext, bus: Bus) -> dict[str, Channel]:
    s = ctx.settings
    channels: dict[str, Channel] = {"inapp": InAppChannel(bus)}
    if s.webhook_enabled and s.webhook_url and s.webhook_secret:
        channels["webhook"] = WebhookChannel(
            s.webhook_url, s.webhook_secret, s.send_timeout, s.delivery_backoff_max, now=ctx.clock.now
        )
    for build in VENDOR_CHANNELS:
        if (channel := build(ctx)) is not None:
            channels[channel.name] = channel
    # The policy's fallback chains ("wechat|wecom": one of them) apply around every channel.
    return {name: FallbackChannel(channel, ctx) for name, channel in channels.items()}


def api_threads(ctx: AppContext) -> int:
    """The api role's thread count: LEADPUSH_API_THREADS, or (0) the database pool's size."""
    return ctx.settings.api_threads or ctx.db.pool_size


class Runtime:
    def __init__(self, ctx: AppContext, roles: frozenset[str]) -> None:
        self.ctx = ctx
        self.roles = roles
        self.hub = Hub(self._valid_tokens, lambda afters: read_after_many(ctx.db, afters))
        self.metrics = Metrics()
        self.bus: Bus = make_bus(ctx.settings.redis_url, ctx.settings.redis_prefix)
        self.dispatcher: Dispatcher | None = None
        self.heartbeat: Heartbeat | None = None
        self.scheduler: TransferScheduler | None = None
        self.channels: dict[str, Channel] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._hinted: set[int] = set()  # recipients of this tick's commits, not yet announced
        self._pushed: list[tuple[int, dict[str, Any]]] = []  # what those commits wrote, as pushed
        self._wake: Wake = NOBODY  # whom those commits gave work
        self._announcing = False  # a `_publish_hinted` is spawned for this tick
        # An ack of a notice about a lead by its owner opens the lead (first-contact SLA).
        self._on_ack = opened_by_ack(ctx)
        s = ctx.settings
        self.gc_freeze = GcFreeze(
            self.hub.count_long_lived,
            lambda: self.hub.closed,
            s.gc_freeze_min_sockets,
            s.gc_unfreeze_share,
            s.gc_freeze_old_objects,
        )
        self.gc_pauses = GcPauses(self.gc_freeze if "api" in roles else None)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.metrics.watch_ledger(LedgerCollector(self.ctx.db, self.ctx.clock.now, self.hub.count))
        self.metrics.registry.register(self.ctx.sla_metrics)
        self.ctx.signals.subscribe_acks(self._on_ack)
        self.gc_pauses.install()
        self.metrics.registry.register(self.gc_pauses)
        if "api" in self.roles:
            # Sync routes run in anyio's default thread pool (this loop's): sized to the database pool.
            to_thread.current_default_thread_limiter().total_tokens = api_threads(self.ctx)
            self.bus.on_inapp(self.hub.deliver)
            self.bus.on_resync(self.hub.resync)
            # Sign-in changes from other processes; after a bus outage, anything may have been missed.
            self.bus.on_auth(self._recheck)
            self.bus.on_resync(lambda: self._recheck(None))
            # ... and the copies of what tokens sign in with (users/authcache.py): a revoke or deactivation
            # elsewhere is refused here at once, not after LEADPUSH_AUTH_CACHE_SECONDS.
            self.bus.on_auth(lambda _ids: self._drop_sign_in_copies())
            self.bus.on_resync(self._drop_sign_in_copies)
            self._spawn(self._recheck_periodically())
            self._spawn(self.hub.beat_periodically(self.ctx.settings.ws_heartbeat_seconds))
            if self.gc_freeze.min_open > 0:
                self._spawn(self._gc_freeze_periodically())
        if "worker" in self.roles:
            # SQLite without Redis is one process by contract: whoever held a lease before us is dead.
            sole = self.ctx.db.is_sqlite and not self.ctx.settings.redis_url
            self.heartbeat = Heartbeat(self.ctx.db, self.ctx.clock, sole_worker=sole)
            await to_thread.run_sync(self.heartbeat.start)
            self.channels = build_channels(self.ctx, self.bus)
            self.dispatcher = Dispatcher(self.ctx, self.channels, self.metrics, self.heartbeat)
            self.bus.on_wake(self.dispatcher.wake)
            self._tasks.append(asyncio.create_task(self.dispatcher.run(), name="leadpush-dispatcher"))
        if "scheduler" in self.roles:
            self.scheduler = TransferScheduler(self.ctx)
            self.bus.on_deadlines(self.scheduler.wake)
            self._tasks.append(asyncio.create_task(self.scheduler.run(), name="leadpush-scheduler"))
        await self.bus.start()
        # This listener pushes what a commit here writes to every api process's sockets: it is the in-app
        # delivery, so those rows are written sent (ledger.py); the worker publishes the rest (other processes'
        # commits: `leadpush transfer run`, scripts).
        self.ctx.signals.subscribe_commits(self._on_commit, pushes_inapp=True)
        self.ctx.signals.subscribe_auth(self._on_auth_changed)
        log.info("leadpush 已启动，角色：%s", ", ".join(sorted(self.roles)))
        if "api" in self.roles:
            log.info("接口线程数：%d", to_thread.current_default_thread_limiter().total_tokens)

    def _on_commit(self, recipient_ids: set[int], pushed: Pushed, inapp_sent: int = 0, wake: Wake = EVERYONE) -> None:
        """Called in the thread that committed: wake this process's listeners, and the workers and schedulers
        the commit gave work (`wake`).

        What the commit wrote (`pushed`) is handed to the recipients' sockets as it is — a socket that is up
        to date sends it with no ledger read; one that missed something re-reads (prevId) — and travels to
        the other api processes in the tick's one hint message. A recipient with nothing in `pushed` (a
        commit that only changed state, e.g. marked read) gets a hint: "re-read". `inapp_sent`: the in-app
        deliveries the commit wrote as sent, counted here as the worker counts the ones it sends.

        A commit whose deliveries were all written sent (in-app only: its push is the delivery) wakes no worker,
        and one that wrote no deadline before a scheduler's next wake-up makes no scheduler re-read (issue 17:
        a claim transaction that found nothing was most of a worker's CPU per assignment).
        """
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if inapp_sent:
            self.metrics.observe_sends("inapp", "sent", inapp_sent)

        def on_loop() -> None:
            with_message = {uid for uid, _ in pushed}
            for uid, message in pushed:
                self.hub.deliver(uid, message)
            for uid in recipient_ids - with_message:
                self.hub.deliver(uid, None)
            # The commits of one loop tick share one wake-up and one hint message (a burst of 1,000
            # assignments was 2,000 Redis messages to every process).
            self._hinted |= recipient_ids
            self._pushed.extend(pushed)
            self._wake |= wake
            if not self._announcing and (self._hinted or self._wake.anyone):
                self._announcing = True
                self._spawn(self._publish_hinted())

        loop.call_soon_threadsafe(on_loop)

    async def _publish_hinted(self) -> None:
        await asyncio.sleep(0)  # the rest of this tick's commits join
        hinted, self._hinted = self._hinted, set()
        pushed, self._pushed = self._pushed, []
        wake, self._wake = self._wake, NOBODY
        self._announcing = False
        # One round trip: the hint first (what the other api processes' sockets wait for), then the wake-up.
        if not await self.bus.publish_hints_and_wake(hinted, pushed, wake):
            self._spawn(self._hint_again(hinted))

    async def _hint_again(self, user_ids: set[int]) -> None:
        """A hint Redis did not take is sent again (as "re-read": newer ones may have gone meanwhile) until it
        goes: the commit's push is these users' in-app delivery on the other api processes (ledger.py).
        (Their own Redis connections, if they broke too, resync every socket when they come back.)"""
        delay = HINT_RETRY_FIRST
        while True:
            await asyncio.sleep(delay)
            if await self.bus.publish_hints(user_ids):
                return
            delay = min(delay * 2, HINT_RETRY_MAX)

    def _on_auth_changed(self, user_ids: set[int]) -> None:
        """Called in the thread that committed a revoke or deactivation: end sessions here and everywhere."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def on_loop() -> None:
            self._recheck(user_ids)
            self._spawn(self.bus.publish_auth(user_ids))

        loop.call_soon_threadsafe(on_loop)

    def _drop_sign_in_copies(self) -> None:
        authcache.install(self.ctx.db.engines, self.ctx.settings.auth_cache_seconds).invalidate()

    def _recheck(self, user_ids: set[int] | None) -> None:
        """On the loop: close these users' (None: everyone's) sockets and long polls whose token is gone."""
        self._spawn(self._revalidate(user_ids))

    async def _revalidate(self, user_ids: set[int] | None) -> None:
        try:
            ended = await self.hub.revalidate(user_ids)
        except Exception as exc:  # noqa: BLE001 - the next periodic check tries again
            log.warning("检查连接的登录凭证失败（%s），稍后重试", type(exc).__name__)
            return
        if ended:
            log.info("已关闭 %d 个登录凭证失效的连接", ended)

    def _valid_tokens(self, hashes: set[str]) -> set[str]:
        with self.ctx.db.read() as session:
            return valid_token_hashes(session, hashes, now=self.ctx.clock.now(), settings=self.ctx.settings)

    async def _recheck_periodically(self) -> None:
        """The safety net should a "sign-in changed" message be lost: one query for all open sockets."""
        while True:
            await asyncio.sleep(self.ctx.settings.session_recheck_seconds)
            await self._revalidate(None)

    async def _gc_freeze_periodically(self) -> None:
        """Freeze long-lived objects while many listeners are open; unfreeze when they go (gcfreeze.py)."""
        self.gc_freeze.start()
        interval = self.ctx.settings.gc_freeze_interval
        try:
            while True:
                # Below the threshold, look more often: sockets opened before the policy turns active
                # are walked by every full pass until then.
                await asyncio.sleep(interval if self.gc_freeze.active else min(interval, 0.25))
                self.gc_freeze.tick()
        finally:
            self.gc_freeze.stop()  # stopping: leave the process (tests run several in one) as it was

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` on this (running) loop, kept referenced until done and cancelled at stop."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.append(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)

    async def stop(self) -> None:
        self.ctx.signals.unsubscribe_commits(self._on_commit)
        self.ctx.signals.unsubscribe_auth(self._on_auth_changed)
        self.ctx.signals.unsubscribe_acks(self._on_ack)
        if self.dispatcher is not None:
            await self.dispatcher.stop()
        if self.heartbeat is not None:
            await to_thread.run_sync(self.heartbeat.stop)
        if self.scheduler is not None:
            await self.scheduler.stop()
        await self.hub.stop()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for channel in self.channels.values():
            await channel.aclose()
        await self.bus.stop()
        self.gc_pauses.uninstall()
