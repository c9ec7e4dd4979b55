"""Catch-up hints across api processes: one Redis message carries every user a loop tick's commits
hinted (not one message per user), reaches the other processes' hubs user by user within one tick, and
a process does not hear its own hints (issue 17)."""

from __future__ import annotations

import asyncio
import uuid

from support import REDIS_URL, require_redis

from leadpush.notify.bus import RedisBus


def test_hints_for_many_users_travel_in_one_message_and_not_back_to_the_sender():
    require_redis(REDIS_URL)

    async def scenario() -> tuple[list[tuple[int, object]], list[tuple[int, object]], int]:
        prefix = f"lp-test-{uuid.uuid4().hex[:8]}"
        sender, receiver = RedisBus(REDIS_URL, prefix), RedisBus(REDIS_URL, prefix)
        heard: list[tuple[int, object]] = []
        echoed: list[tuple[int, object]] = []
        receiver.on_inapp(lambda uid, message: heard.append((uid, message)))
        sender.on_inapp(lambda uid, message: echoed.append((uid, message)))
        await sender.start()
        await receiver.start()
        await asyncio.wait_for(sender.connected.wait(), 10)
        await asyncio.wait_for(receiver.connected.wait(), 10)
        published = 0
        real = sender._publish

        async def counted(channel: str, payload: dict) -> None:
            nonlocal published
            published += 1
            await real(channel, payload)

        sender._publish = counted  # type: ignore[method-assign]
        await sender.publish_hints({3, 1, 2})
        for _ in range(200):
            if len(heard) >= 3:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        await sender.stop()
        await receiver.stop()
        return heard, echoed, published

    heard, echoed, published = asyncio.run(scenario())
    assert sorted(heard) == [(1, None), (2, None), (3, None)]
    assert echoed == []
    assert published == 1
