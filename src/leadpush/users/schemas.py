"""API shapes of users."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from leadpush.schemas import CamelModel, RequestModel


class UserOut(CamelModel):
    id: int
    name: str
    role: str
    team: str | None
    wechat_openid: str | None
    wecom_userid: str | None
    capacity: int | None
    active: bool
    created_at: datetime


class UserCreate(RequestModel):
    name: str = Field(min_length=1, max_length=64)
    role: str = Field(description="admin | manager | sales")
    team: str | None = Field(default=None, max_length=64)
    wechat_openid: str | None = Field(default=None, max_length=128)
    wecom_userid: str | None = Field(default=None, max_length=64)
    capacity: int | None = Field(default=None, ge=0, le=1_000_000)


class UserUpdate(RequestModel):
    name: str | None = Field(default=None, min_length=1, max_length=64)
    role: str | None = None
    team: str | None = Field(default=None, max_length=64)
    wechat_openid: str | None = Field(default=None, max_length=128)
    wecom_userid: str | None = Field(default=None, max_length=64)
    capacity: int | None = Field(default=None, ge=0, le=1_000_000)
    active: bool | None = None


class UserWithToken(CamelModel):
    user: UserOut
    token: str = Field(description="只显示这一次，请妥善保存")
