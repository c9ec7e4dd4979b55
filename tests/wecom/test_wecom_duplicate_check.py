"""WeCom's enable_duplicate_check: a card sent again after a crash caught it mid-flight is shown once.

The fake WeCom honours the check as WeCom does (the same recipients, msgtype and content within the
interval: errcode 0, not shown again, kept as a duplicate the test counts). leadpush asks for it on every
app message, and its textcard says nothing about the try, so the re-send is the same message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from leadpush_fakes.wechat import WECOM_SEND_PATH
from sqlalchemy import select
from support import DATABASES, Api
from support.api import ok
from support.channels import AGENTID, CORPID, CORPSECRET, FakeWeChatServer, channel_settings, strict_state
from support.databases import database_url
from support.servers import start_stack

from leadpush.notify.channels.base import DeliveryJob
from leadpush.notify.dispatcher import claim_due_deliveries, record_outcome
from leadpush.notify.models import Delivery
from leadpush.wecom.channel import build_channel

MEMBER = "alice"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeWeChatServer]:
    with FakeWeChatServer(strict_state(wecom_users=[MEMBER])) as server:
        yield server


# ---- the fake, over real HTTP ----------------------------------------------------------------


def wecom_token(c: httpx.Client) -> str:
    return c.get("/cgi-bin/gettoken", params={"corpid": CORPID, "corpsecret": CORPSECRET}).json()["access_token"]


def card(description: str = "客户：张三", **extra: Any) -> dict[str, Any]:
    textcard = {"title": "您有一条新线索：张三", "description": description, "url": "https://crm.example.com/x"}
    return {"touser": MEMBER, "msgtype": "textcard", "agentid": AGENTID, "textcard": textcard, **extra}


def test_the_fake_shows_a_repeat_within_the_interval_once_and_answers_it_ok(fake: FakeWeChatServer) -> None:
    fake.state.reset(full=True)
    check = {"enable_duplicate_check": 1, "duplicate_check_interval": 600}
    with httpx.Client(base_url=fake.url, timeout=5) as c:
        token = wecom_token(c)

        def post(body: dict[str, Any]) -> dict[str, Any]:
            return c.post(WECOM_SEND_PATH, params={"access_token": token}, json=body).json()

        first = post(card(**check))
        again = post(card(**check))
        assert first["errcode"] == again["errcode"] == 0
        assert again["msgid"] == first["msgid"]  # answered as the message it repeats
        assert len(fake.state.get_messages("wecom")) == 1
        assert [d["msgid"] for d in fake.state.get_wecom_duplicates()] == [first["msgid"]]
        assert c.get("/_fake/stats").json()["wecom_duplicates"] == 1

        assert post(card("客户：李四", **check))["errcode"] == 0  # other content: another message
        assert post(card())["errcode"] == 0  # the check not asked for: shown again
        assert len(fake.state.get_messages("wecom")) == 3

        fake.state.advance(601)  # past this message's interval: shown again
        assert post(card(**check))["msgid"] != first["msgid"]
        assert len(fake.state.get_messages("wecom")) == 4
        assert fake.state.stats()["wecom_duplicates"] == 1


def test_the_fake_uses_the_default_interval_of_1800_seconds(fake: FakeWeChatServer) -> None:
    fake.state.reset(full=True)
    with httpx.Client(base_url=fake.url, timeout=5) as c:
        token = wecom_token(c)
        body = card(enable_duplicate_check=1)
        for advance, shown in ((0, 1), (1700, 1), (101, 2)):
            fake.state.advance(advance)
            assert c.post(WECOM_SEND_PATH, params={"access_token": token}, json=body).json()["errcode"] == 0
            assert len(fake.state.get_messages("wecom")) == shown


# ---- leadpush asks for the check -------------------------------------------------------------


@pytest.fixture(params=DATABASES)
def api_only(request, tmp_path, fake: FakeWeChatServer) -> Iterator[Any]:
    """A leadpush serving the API only, no worker: the test plays the workers (claim, send, record)."""

    def start(**overrides: Any) -> Api:
        gen = database_url(request.param, str(tmp_path))
        url = next(gen)
        ctx, server = start_stack(url, roles=frozenset({"api"}), **channel_settings(fake.url, **overrides))
        api = Api(url=server.url, ctx=ctx)
        started.append((api, server, gen))
        return api

    started: list[tuple[Api, Any, Any]] = []
    fake.state.reset(full=True)
    yield start
    for api, server, gen in started:
        api.close()
        server.stop()
        api.ctx.db.dispose()
        gen.close()


def assign_to_member(api: Api) -> None:
    manager = api.user("王经理", "manager", "A")
    alice = api.user("李丽", "sales", "A", wecom_userid=MEMBER)
    lead = api.lead(manager, name="张三")
    ok(api.client(manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": alice.id}))


def wecom_job(jobs: list[DeliveryJob]) -> DeliveryJob:
    [job] = [j for j in jobs if j.channel == "wecom"]
    return job


def send_once(api: Api, job: DeliveryJob):  # noqa: ANN201 - a SendResult
    channel = build_channel(api.ctx)
    assert channel is not None

    async def run():  # noqa: ANN202
        try:
            return await channel.send(job)
        finally:
            await channel.aclose()

    return asyncio.run(run())


@pytest.mark.parametrize(("seconds", "shown"), [(1800, 1), (0, 2)], ids=["checked", "check-off"])
def test_a_card_sent_again_after_a_crash_mid_flight_is_shown_once(api_only, fake: FakeWeChatServer, seconds, shown):
    """Worker A claims the WeCom delivery and sends it; WeCom shows the card; A dies before recording it.
    Worker B takes the claim over (A's heartbeat stopped) and sends it again. With the duplicate check
    (the default) the member sees the card once; without it (LEADPUSH_WECOM_DUPLICATE_CHECK_SECONDS=0),
    twice: the bounded re-send docs/reliability.md describes."""
    api = api_only(wecom_duplicate_check_seconds=seconds)
    assign_to_member(api)
    now = api.ctx.clock.now()

    crashed = wecom_job(claim_due_deliveries(api.ctx.db, now, 60, 10, "w-crashed"))
    assert send_once(api, crashed).outcome == "sent"  # on the member's phone; then the worker dies
    assert len(fake.state.get_messages("wecom")) == 1

    later = now + timedelta(seconds=5)  # long before the 60 s lease ends: taken over by the heartbeat
    survivor = wecom_job(claim_due_deliveries(api.ctx.db, later, 60, 10, "w-survivor", dead_workers={"w-crashed"}))
    assert survivor.delivery_id == crashed.delivery_id and survivor.attempts == 2
    result = send_once(api, survivor)
    assert result.outcome == "sent" and result.errcode == 0
    assert record_outcome(api.ctx, survivor, result, later) == "sent"

    messages = fake.state.get_messages("wecom")
    assert len(messages) == shown  # what the member sees
    assert [m["touser"] for m in messages] == [[MEMBER]] * shown
    if seconds:
        [repeat] = fake.state.get_wecom_duplicates()
        # The same message both times: nothing in the card depends on the try.
        assert repeat["body"] == messages[0]["body"]
        assert messages[0]["body"]["enable_duplicate_check"] == 1
        assert messages[0]["body"]["duplicate_check_interval"] == 1800
        assert result.provider_id == messages[0]["msgid"]
    else:
        assert fake.state.get_wecom_duplicates() == []
        assert "enable_duplicate_check" not in messages[0]["body"]
        assert "duplicate_check_interval" not in messages[0]["body"]
        assert messages[0]["body"] == messages[1]["body"]
    with api.ctx.db.read() as s:
        delivery = s.scalars(select(Delivery).where(Delivery.channel == "wecom")).one()
    assert delivery.status == "sent" and delivery.attempts == 2
