"""Cross-process wake-ups and in-app fan-out: in-process by default, Redis pub/sub when configured.

Everything sent here is a hint. A process that misses a message (Redis restarting, a slow consumer)
catches up from the ledger: the dispatcher polls, and WebSocket connections re-read by id. A lost
"sign-in changed" message is made up by each api process's periodic re-check of its sockets' tokens.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from leadpush.notify.signals import EVERYONE, Wake

log = logging.getLogger(__name__)


# Notifications one hint message carries at most (a few hundred bytes each); beyond, users are hinted only.
MAX_PUSHED_PER_HINT = 500

InappHandler = Callable[[int, dict[str, Any] | None], None]
WakeHandler = Callable[[], None]  # a worker: deliveries may be due
# A scheduler: a stored moment it wakes for may have been written earlier than it waits (None: not known, re-read).
DeadlineHandler = Callable[[datetime | None], None]
ResyncHandler = Callable[[], None]
AuthHandler = Callable[[set[int]], None]


class Bus(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish_inapp(self, user_id: int, message: dict[str, Any]) -> None: ...

    async def publish_wake(self, wake: Wake = EVERYONE) -> None: ...

    async def publish_hints(self, user_ids: set[int], pushed: Sequence[tuple[int, dict[str, Any]]] = ()) -> bool:
        """Whether the hint went (or there was nobody else to tell): False when it must be sent again."""
        ...

    async def publish_hints_and_wake(
        self, user_ids: set[int], pushed: Sequence[tuple[int, dict[str, Any]]] = (), wake: Wake = EVERYONE
    ) -> bool:
        """`publish_hints` and `publish_wake(wake)` in one go; whether the hint went (False: send it again)."""
        ...

    async def publish_auth(self, user_ids: set[int]) -> None: ...

    def on_inapp(self, handler: InappHandler) -> None: ...

    def on_wake(self, handler: WakeHandler) -> None: ...

    def on_deadlines(self, handler: DeadlineHandler) -> None: ...

    def on_resync(self, handler: ResyncHandler) -> None: ...

    def on_auth(self, handler: AuthHandler) -> None: ...

    async def ping(self) -> bool: ...


class _Handlers:
    def __init__(self) -> None:
        self.inapp: list[InappHandler] = []
        self.wake: list[WakeHandler] = []
        self.deadlines: list[DeadlineHandler] = []
        self.resync: list[ResyncHandler] = []
        self.auth: list[AuthHandler] = []

    def on_inapp(self, handler: InappHandler) -> None:
        self.inapp.append(handler)

    def on_wake(self, handler: WakeHandler) -> None:
        self.wake.append(handler)

    def on_deadlines(self, handler: DeadlineHandler) -> None:
        self.deadlines.append(handler)

    def on_resync(self, handler: ResyncHandler) -> None:
        self.resync.append(handler)

    def on_auth(self, handler: AuthHandler) -> None:
        self.auth.append(handler)

    def fire_inapp(self, user_id: int, message: dict[str, Any] | None) -> None:
        for handler in self.inapp:
            handler(user_id, message)

    def fire_wake(self, wake: Wake = EVERYONE) -> None:
        """The workers if `wake.deliveries`, then the schedulers if `wake.deadlines`."""
        if wake.deliveries:
            for handler in self.wake:
                handler()
        if wake.deadlines:
            for deadline_handler in self.deadlines:
                deadline_handler(wake.earliest)

    def fire_resync(self) -> None:
        for handler in self.resync:
            handler()

    def fire_auth(self, user_ids: set[int]) -> None:
        for handler in self.auth:
            handler(user_ids)


class LocalBus(_Handlers):
    """One process: handlers are called directly."""

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def publish_inapp(self, user_id: int, message: dict[str, Any]) -> None:
        self.fire_inapp(user_id, message)

    async def publish_wake(self, wake: Wake = EVERYONE) -> None:
        self.fire_wake(wake)

    async def publish_hints(self, user_ids: set[int], pushed: Sequence[tuple[int, dict[str, Any]]] = ()) -> bool:
        return True  # this process's hub was told directly

    async def publish_hints_and_wake(
        self, user_ids: set[int], pushed: Sequence[tuple[int, dict[str, Any]]] = (), wake: Wake = EVERYONE
    ) -> bool:
        self.fire_wake(wake)
        return True  # this process's hub was told directly

    async def publish_auth(self, user_ids: set[int]) -> None:
        return None  # this process's hub was told directly

    async def ping(self) -> bool:
        return True


class RedisBus(_Handlers):
    """Several processes: publish to Redis; a listener task feeds this process's handlers.

    The listener reconnects with backoff after any Redis error, and on every (re)connect asks the
    local hub to resync its connections from the database, so the gap is replayed, not lost.
    """

    def __init__(self, url: str, prefix: str = "leadpush", node_id: str | None = None) -> None:
        super().__init__()
        self.wake_channel = f"{prefix}:wake"
        self.inapp_channel = f"{prefix}:inapp"
        # Catch-up hints: one message names every user a loop tick's commits hinted (issue 17).
        self.hints_channel = f"{prefix}:hints"
        self.auth_channel = f"{prefix}:auth"
        import redis.asyncio as aioredis

        self.url = url
        self.node_id = node_id or uuid.uuid4().hex
        self._redis = aioredis.from_url(url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=10)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.connected = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="leadpush-redis-listener")

    async def stop(self) -> None:
        self._stopping = True
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        await self._redis.aclose()

    async def _publish(self, channel: str, payload: dict[str, Any]) -> None:
        await self._redis.publish(channel, json.dumps(payload, ensure_ascii=False))

    async def publish_inapp(self, user_id: int, message: dict[str, Any] | None) -> None:
        """`message` None is a hint: "this user has something new, re-read the ledger"."""
        await self._publish(self.inapp_channel, {"userId": user_id, "message": message, "from": self.node_id})

    async def publish_hints(self, user_ids: set[int], pushed: Sequence[tuple[int, dict[str, Any]]] = ()) -> bool:
        """Tell every API process right after a commit, without waiting for the worker's push: one
        message for all these users, with what the commits wrote for them as pushed (`pushed`: a process's
        sockets that are up to date send it as it is; for the other users, the hub reads for all of them
        at once). `userIds` names every user, so a process of an older version still re-reads."""
        if not user_ids:
            return True
        try:
            await self._publish(self.hints_channel, self._hints_payload(user_ids, pushed))
        except Exception as exc:  # noqa: BLE001 - the caller sends it again (runtime.py)
            log.warning("Redis 提示消息发送失败：%s", type(exc).__name__)
            return False
        return True

    def _hints_payload(self, user_ids: set[int], pushed: Sequence[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
        payload: dict[str, Any] = {"userIds": sorted(user_ids), "from": self.node_id}
        if pushed:
            # A burst (a 10,000-lead intake) would make one message of megabytes, and Redis drops a
            # subscriber whose output buffer grows past its limit: past the cap, users get the re-read hint.
            # A user whose notifications do not all fit gets none of them: a hint reads them all, in order.
            left_out = {uid for uid, _ in pushed[MAX_PUSHED_PER_HINT:]}
            payload["messages"] = [[uid, m] for uid, m in pushed[:MAX_PUSHED_PER_HINT] if uid not in left_out]
        return payload

    async def publish_hints_and_wake(
        self, user_ids: set[int], pushed: Sequence[tuple[int, dict[str, Any]]] = (), wake: Wake = EVERYONE
    ) -> bool:
        """A loop tick's commits, announced in one round trip to Redis: first the hint message (what the
        other api processes' sockets wait for), then the wake-up of whom the commits gave work (`wake`; none:
        no wake-up message). `publish_wake` then `publish_hints` was two round trips, the hint behind the
        wake-up's, on a loop that is busy in a burst."""
        if not user_ids and not wake.anyone:
            return True
        try:
            pipe = self._redis.pipeline(transaction=False)
            if user_ids:
                pipe.publish(self.hints_channel, json.dumps(self._hints_payload(user_ids, pushed), ensure_ascii=False))
            if wake.anyone:
                pipe.publish(self.wake_channel, json.dumps(self._wake_payload(wake), ensure_ascii=False))
            await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - the caller sends the hint again; a lost wake-up waits for a poll
            log.warning("Redis 提示/唤醒消息发送失败：%s", type(exc).__name__)
            return not user_ids
        finally:
            self.fire_wake(wake)  # this process's own worker / scheduler (if any) need no round trip through Redis
        return True

    def _wake_payload(self, wake: Wake) -> dict[str, Any]:
        """Whom the wake-up is for. A process of an older version reads none of the fields and wakes both."""
        earliest = wake.earliest.isoformat() if wake.deadlines and wake.earliest is not None else None
        return {"from": self.node_id, "deliveries": wake.deliveries, "deadlines": wake.deadlines, "earliest": earliest}

    async def publish_auth(self, user_ids: set[int]) -> None:
        """Tell every other api process to re-check these users' sockets (this one was told directly)."""
        try:
            await self._publish(self.auth_channel, {"userIds": sorted(user_ids), "from": self.node_id})
        except Exception as exc:  # noqa: BLE001 - the periodic re-check closes them a little later
            log.warning("Redis 登录状态变更消息发送失败：%s", type(exc).__name__)

    async def publish_wake(self, wake: Wake = EVERYONE) -> None:
        if not wake.anyone:
            return
        try:
            await self._publish(self.wake_channel, self._wake_payload(wake))
        except Exception as exc:  # noqa: BLE001 - a lost wake-up only delays until the next poll
            log.warning("Redis 唤醒消息发送失败：%s", type(exc).__name__)
        # This process's own worker / scheduler (if any) need no round trip through Redis.
        self.fire_wake(wake)

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except Exception as exc:  # noqa: BLE001
            log.warning("Redis 健康检查失败：%s", type(exc).__name__)
            return False

    async def _listen(self) -> None:
        delay = 0.2
        while not self._stopping:
            pubsub = self._redis.pubsub()
            try:
                # Only what this process has handlers for: an api-only process has nobody to wake, a worker or a
                # scheduler no sockets to feed (each hint cost every process a message to parse per commit).
                channels = [self.inapp_channel, self.hints_channel] if self.inapp else []
                if self.auth:
                    channels.append(self.auth_channel)
                if self.wake or self.deadlines:
                    channels.append(self.wake_channel)
                if not channels:  # nothing to hear (a process that only publishes)
                    self.connected.set()
                    return
                await pubsub.subscribe(*channels)
                self.connected.set()
                delay = 0.2
                log.info("已连接 Redis 订阅")
                # Anything published while we were away is in the ledger: resync and wake.
                self.fire_resync()
                self.fire_wake()
                while not self._stopping:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                    if msg is None:
                        continue
                    self._dispatch(msg)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                self.connected.clear()
                log.warning("Redis 订阅中断（%s），%.1f 秒后重连", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:  # noqa: BLE001
                    pass

    def _dispatch(self, msg: dict[str, Any]) -> None:
        channel = msg["channel"].decode() if isinstance(msg["channel"], bytes) else msg["channel"]
        try:
            payload = json.loads(msg["data"])
        except (TypeError, ValueError):
            return
        if channel == self.inapp_channel:
            if payload["message"] is None and payload.get("from") == self.node_id:
                return  # our own hint: this process's hub was told directly
            self.fire_inapp(int(payload["userId"]), payload["message"])
        elif channel == self.hints_channel and payload.get("from") != self.node_id:
            with_message: set[int] = set()
            for uid, message in payload.get("messages") or ():
                with_message.add(int(uid))
                self.fire_inapp(int(uid), message)
            for uid in payload["userIds"]:
                if int(uid) not in with_message:
                    self.fire_inapp(int(uid), None)
        elif channel == self.wake_channel and payload.get("from") != self.node_id:
            self.fire_wake(_wake_of(payload))
        elif channel == self.auth_channel and payload.get("from") != self.node_id:
            self.fire_auth({int(uid) for uid in payload["userIds"]})


def _wake_of(payload: dict[str, Any]) -> Wake:
    """A wake-up message's `Wake`; a field it lacks (a process of an older version) wakes, re-reading."""
    earliest: datetime | None = None
    if isinstance(at := payload.get("earliest"), str):
        try:
            earliest = datetime.fromisoformat(at)
        except ValueError:
            earliest = None
    return Wake(bool(payload.get("deliveries", True)), bool(payload.get("deadlines", True)), earliest)


def make_bus(redis_url: str | None, prefix: str = "leadpush") -> Bus:
    return RedisBus(redis_url, prefix) if redis_url else LocalBus()
