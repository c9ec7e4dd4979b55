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
    login_name: str | None = Field(description="登录名（手机号或工号），用于密码登录")
    has_password: bool = Field(description="是否已设置密码")
    locked_until: datetime | None = Field(
        description="登录失败次数过多时账号锁定到此时刻（早于当前时间则已不再锁定）；管理员重置密码即解除"
    )


class UserCreate(RequestModel):
    name: str = Field(min_length=1, max_length=64)
    role: str = Field(description="admin | manager | sales")
    team: str | None = Field(default=None, max_length=64)
    wechat_openid: str | None = Field(default=None, max_length=128)
    wecom_userid: str | None = Field(default=None, max_length=64)
    capacity: int | None = Field(default=None, ge=0, le=1_000_000)
    login_name: str | None = Field(default=None, max_length=64, description="登录名（手机号或工号）")
    password: str | None = Field(default=None, max_length=1024, description="初始密码（需同时设置登录名）")


class UserUpdate(RequestModel):
    name: str | None = Field(default=None, min_length=1, max_length=64)
    role: str | None = None
    team: str | None = Field(default=None, max_length=64)
    wechat_openid: str | None = Field(default=None, max_length=128)
    wecom_userid: str | None = Field(default=None, max_length=64)
    capacity: int | None = Field(default=None, ge=0, le=1_000_000)
    active: bool | None = None
    login_name: str | None = Field(default=None, max_length=64, description="登录名；空字符串或 null 表示清除")


class UserWithToken(CamelModel):
    user: UserOut
    token: str = Field(description="只显示这一次，请妥善保存")


class SessionOut(CamelModel):
    token: str = Field(description="会话令牌（lps_…），以 Authorization: Bearer 使用")
    expires_at: datetime = Field(description="会话最迟到此时刻失效；闲置超过 LEADPUSH_SESSION_IDLE_HOURS 也会失效")
    user: UserOut


class LoginBody(RequestModel):
    login_name: str = Field(max_length=200, description="登录名（手机号或工号）")
    password: str = Field(max_length=1024)


class PasswordChange(RequestModel):
    current_password: str | None = Field(default=None, max_length=1024, description="当前密码（尚未设置密码时可省略）")
    new_password: str = Field(max_length=1024)


class PasswordReset(RequestModel):
    new_password: str = Field(max_length=1024)


class TokenOut(CamelModel):
    id: int
    user_id: int
    name: str | None
    prefix: str = Field(description="令牌开头几个字符，用于区分")
    created_at: datetime
    last_used_at: datetime | None = Field(description="最近使用时间（每分钟最多记录一次）")
    revoked_at: datetime | None


class NewToken(TokenOut):
    token: str = Field(description="只显示这一次，请妥善保存")


class TokenCreate(RequestModel):
    name: str = Field(min_length=1, max_length=64, description="令牌用途，如「ERP 对接」")
    user_id: int | None = Field(default=None, ge=1, le=2**31 - 1, description="为谁生成（仅管理员可为他人生成）")
