"""Acting as leadpush's users over real HTTP, and reading its answers (the success and error envelopes)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import httpx

from leadpush.context import AppContext
from leadpush.users.service import create_user

CJK = re.compile(r"[\u4e00-\u9fff]")


@dataclass
class Person:
    id: int
    token: str
    name: str
    role: str
    team: str | None


@dataclass
class Api:
    """What a test drives: a running leadpush on loopback and helpers to act as its users."""

    url: str
    ctx: AppContext
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, who: Person | str | None = None) -> httpx.Client:
        token = who.token if isinstance(who, Person) else who
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        c = httpx.Client(base_url=self.url, headers=headers, timeout=30)
        self.clients.append(c)
        return c

    def user(self, name: str, role: str = "sales", team: str | None = "A", **kw: Any) -> Person:
        with self.ctx.db.write() as session:
            user, token = create_user(session, name=name, role=role, team=team, create_missing_team=True, **kw)
            return Person(user.id, token, name, role, team)

    def lead(
        self, who: Person, name: str = "张三", phone: str = "13800138000", source: str = "抖音广告", **kw: Any
    ) -> dict:
        r = self.client(who).post("/api/customers", json={"name": name, "phone": phone, "source": source, **kw})
        assert r.status_code == 201, r.text
        return r.json()["data"]

    def nudge(self, **delta: float) -> None:
        """Move the clock (by `delta`, timedelta's keywords) and wake the worker and the scheduler, as any commit
        would."""
        if delta:
            self.ctx.clock.advance(**delta)
        self.ctx.signals.notifications_committed(set())

    def close(self) -> None:
        for c in self.clients:
            c.close()
        self.clients.clear()


def ok(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["success"] is True, body
    return body["data"]


def refused(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """An error answer: the status, the envelope, a machine code and a Chinese message for the user."""
    assert r.status_code == status, r.text
    body = r.json()
    assert body["success"] is False, body
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and CJK.search(body["message"]), body
    assert "data" in body
    return body
