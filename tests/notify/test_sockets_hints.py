"""Catch-up hints across api processes: one Redis message carries every user a loop tick's commits
hinted (not one message per user), reaches the other processes' hubs user by user within one tick, and
a process does not hear its own hints (issue 17)."""

from __future__ import annotations

import asyncio

from support import REDIS_URL, require_redis
from support.buses import bus_pair, running, until


def test_hints_for_many_users_travel_in_one_message_and_not_back_to_the_sender():
    require_redis(REDIS_URL)

    async def scenario() -> tuple[list[tuple[int, object]], list[tuple[int, object]], int]:
        sender, receiver = bus_pair()
        heard: list[tuple[int, object]] = []
        echoed: list[tuple[int, object]] = []
        receiver.on_inapp(lambda uid, message: heard.append((uid, message)))
        sender.on_inapp(lambda uid, message: echoed.append((uid, message)))
        published = 0
        async with running(sender, receiver):
            real = sender._publish

            async def counted(channel: str, payload: dict) -> None:
                nonlocal published
                published += 1
                await real(channel, payload)

            sender._publish = counted  # type: ignore[method-assign]
            await sender.publish_hints({3, 1, 2})
            await until(lambda: len(heard) >= 3)
            await asyncio.sleep(0.2)  # nothing more comes: no echo to the sender, no second message
        return heard, echoed, published

    heard, echoed, published = asyncio.run(scenario())
    assert sorted(heard) == [(1, None), (2, None), (3, None)]
    assert echoed == []
    assert published == 1
