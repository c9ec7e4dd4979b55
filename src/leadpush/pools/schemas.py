"""API shapes of pools: their settings, their rules as they apply to the caller today, their members."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, field_validator

from leadpush.leads.schemas import CustomerOut
from leadpush.schemas import CamelModel, RequestModel
from leadpush.text import single_line

MemberRole = Literal["member", "admin"]


def _clean_name(value: str) -> str:
    cleaned = "".join(ch for ch in single_line(value, "线索池名称") if ch >= " " and ch != "\x7f").strip()
    if not cleaned:
        raise ValueError("线索池名称不能为空")
    if len(cleaned) > 64:
        raise ValueError("线索池名称不能超过 64 个字符")
    return cleaned


class PoolBody(RequestModel):
    """A pool's settings; a rule left null takes the deployment's setting."""

    name: str = Field(description="名称，唯一")
    team: str | None = Field(default=None, description="所属团队；null = 全公司可见（仅系统管理员可建）")
    claim_daily_limit: int | None = Field(
        default=None, ge=0, le=100_000, description="每人每天可从本池领取的条数；0 = 不限；null = 部署设置"
    )
    cooldown_hours: float | None = Field(
        default=None, ge=0, le=24 * 365, description="原负责人失去线索后多少小时内不能领回或被分回；null = 部署设置"
    )
    embargo_minutes: int = Field(default=0, ge=0, le=7 * 24 * 60, description="新入池线索的保护期（分钟）")
    hide_phone: bool = Field(default=False, description="领取前隐藏电话号码")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _clean_name(v)


class PoolPatch(RequestModel):
    """Only the fields sent change; null for a rule = back to the deployment's setting."""

    name: str | None = None
    team: str | None = None
    claim_daily_limit: int | None = Field(default=None, ge=0, le=100_000)
    cooldown_hours: float | None = Field(default=None, ge=0, le=24 * 365)
    embargo_minutes: int | None = Field(default=None, ge=0, le=7 * 24 * 60)
    hide_phone: bool | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return None if v is None else _clean_name(v)


class MemberBody(RequestModel):
    user_id: int = Field(ge=1, le=2**31 - 1)
    role: MemberRole = "member"


class PoolMemberOut(CamelModel):
    user_id: int
    name: str
    team: str | None
    role: MemberRole


class PoolUserOut(CamelModel):
    id: int
    name: str
    role: Literal["admin", "manager", "sales"]
    team: str | None


class PoolOut(CamelModel):
    """A pool (id null = the company pool) with its rules as they apply today and what the caller may do."""

    id: int | None = Field(description="null = 公司公海（查询时用 poolId=company）")
    name: str
    company: bool
    team: str | None
    claim_daily_limit: int | None = Field(description="设置值；null = 部署设置")
    cooldown_hours: float | None = Field(description="设置值；null = 部署设置")
    embargo_minutes: int
    hide_phone: bool
    effective_claim_daily_limit: int = Field(description="实际生效的每日领取上限；0 = 不限")
    effective_cooldown_hours: float = Field(description="实际生效的冷却时间（小时）；0 = 无")
    claimed_today: int = Field(description="调用者今天已从本池领取的条数")
    claims_left_today: int | None = Field(description="调用者今天还能领取的条数；null = 不限")
    lead_count: int = Field(description="池中的线索数")
    my_role: MemberRole | None = Field(description="调用者在成员名单中的角色")
    can_claim: bool
    can_hand_out: bool
    can_manage: bool
    members: list[PoolMemberOut] = Field(default_factory=list)
    created_at: datetime | None = None


class PoolDeleted(CamelModel):
    id: int
    name: str
    moved_to_company_pool: int = Field(description="移入公司公海的线索数")


class PoolLeadOut(CustomerOut):
    """A lead in the pool listing: whether the caller may claim it now, and if not why."""

    embargo_minutes_left: int | None = Field(default=None, description="保护期还剩几分钟；null = 不在保护期")
    can_claim: bool = Field(default=False, description="调用者现在能否领取")
    claim_block: Literal["embargo", "claim_limit", "cooldown"] | None = Field(
        default=None, description="不能领取的原因：保护期 / 今日领取已达上限 / 冷却期"
    )


class PoolLeadPage(CamelModel):
    items: list[PoolLeadOut]
    total: int
    page: int
    page_size: int
