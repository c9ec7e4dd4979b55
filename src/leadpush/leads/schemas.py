"""API shapes of leads and follow-ups."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from leadpush.leads.models import STATUSES
from leadpush.schemas import CamelModel, RequestModel
from leadpush.text import multi_line, single_line

PHONE_RE = re.compile(r"^\+?[0-9]{3,20}$")
CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _not_bool(value: Any) -> Any:
    # Pydantic's lax mode reads true/false as 1/0: an id sent as a boolean is a client bug, not user 1.
    if isinstance(value, bool):
        raise ValueError("应为整数 id")
    return value


Id = Annotated[int, BeforeValidator(_not_bool)]


def clean_text(value: str, field: str, max_len: int, required: bool = True, lines: bool = False) -> str:
    """Strip, refuse what breaks lines (all of it unless `lines`: see leadpush.text), check the length."""
    value = multi_line(value, field) if lines else single_line(value, field)
    value = CONTROL_RE.sub("", value).strip()
    if required and not value:
        raise ValueError(f"{field}不能为空")
    if len(value) > max_len:
        raise ValueError(f"{field}不能超过 {max_len} 个字符")
    return value


def clean_tags(tags: list[str]) -> list[str]:
    """Each tag cleaned like a one-line field, empty ones dropped, duplicates kept once in their order."""
    cleaned = (clean_text(t, "标签", 32, required=False) for t in tags)
    return list(dict.fromkeys(t for t in cleaned if t))


def check_status(value: str | None) -> str | None:
    if value is not None and value not in STATUSES:
        raise ValueError(f"状态必须是 {' / '.join(STATUSES)} 之一")
    return value


class CustomerCreate(RequestModel):
    name: str = Field(description="客户姓名")
    phone: str = Field(description="手机号或电话，可含空格、-、括号")
    source: str = ""
    region: str = Field(default="", description="地区，如 上海 / 华东")
    tags: list[str] = Field(default_factory=list, description="标签", max_length=20)
    status: str = "new"
    note: str = ""
    assigned_to: Id | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return clean_text(v, "客户姓名", 100)

    @field_validator("phone")
    @classmethod
    def _phone(cls, v: str) -> str:
        cleaned = re.sub(r"[\s\-()（）]", "", single_line(v, "电话号码"))
        if not PHONE_RE.match(cleaned):
            raise ValueError("电话号码格式不正确")
        return cleaned

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        return clean_text(v, "来源", 100, required=False)

    @field_validator("region")
    @classmethod
    def _region(cls, v: str) -> str:
        return clean_text(v, "地区", 64, required=False)

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        return clean_tags(v)

    @field_validator("note")
    @classmethod
    def _note(cls, v: str) -> str:
        return clean_text(v, "备注", 2000, required=False, lines=True)

    @field_validator("status")
    @classmethod
    def _status(cls, v: str) -> str:
        return check_status(v) or "new"


class CustomerOut(CamelModel):
    id: int
    name: str
    phone: str
    source: str
    region: str
    tags: list[str]
    status: str
    note: str
    owner_id: int | None
    owner_name: str | None = None
    in_pool: bool
    pool_id: int | None = Field(default=None, description="所在线索池；null 且 inPool = 公司公海")
    external_id: str | None = Field(default=None, description="线索接入：对方系统中的线索 id")
    intake_source_id: int | None = Field(default=None, description="线索接入：线索来源 id")
    duplicate_of_id: int | None = Field(default=None, description="疑似重复：与之电话相同的已有线索 id")
    pool_name: str | None = Field(
        default=None, description="所在线索池的名称（公司公海 = 公司公海）；已有负责人时为 null"
    )
    phone_hidden: bool = Field(default=False, description="电话已隐藏（线索池隐藏电话，领取后可见）")
    embargo_until: datetime | None = Field(default=None, description="新入池保护期结束时间，此前成员不能领取")
    assigned_at: datetime | None
    last_follow_up_at: datetime | None
    transfer_due_at: datetime | None
    opened_at: datetime | None = Field(default=None, description="当前负责人首次打开（查看）线索的时间")
    sla_next_at: datetime | None = Field(default=None, description="首次联系规则下一步（提醒/上报/改派）的时间")
    first_follow_up_at: datetime | None = Field(
        default=None, description="当前负责人本次分配后的首次跟进时间（仅线索详情返回）"
    )
    next_follow_up_at: datetime | None = Field(default=None, description="下次跟进时间（跟进计划）；null = 未计划")
    next_follow_up_note: str | None = Field(default=None, description="下次跟进备注")
    version: int
    created_at: datetime
    updated_at: datetime


class CustomerPage(CamelModel):
    items: list[CustomerOut]
    total: int
    page: int
    page_size: int


class CustomerList(CamelModel):
    customers: list[CustomerOut]


PLAN_NOTE_MAX = 200


def clean_plan_note(value: str | None) -> str | None:
    """A follow-up plan's note: one line, at most 200 characters; blank = none."""
    if value is None:
        return None
    return clean_text(value, "跟进计划备注", PLAN_NOTE_MAX, required=False) or None


class FollowUpPlanIn(RequestModel):
    """Set a lead's follow-up plan (下次跟进). A time without an offset is read in LEADPUSH_TIMEZONE."""

    at: datetime = Field(description="下次跟进时间，如 2026-12-01T15:00:00+08:00（不带时区按系统时区）")
    note: str | None = Field(default=None, description="备注（最多 200 字）")

    @field_validator("note")
    @classmethod
    def _note(cls, v: str | None) -> str | None:
        return clean_plan_note(v)


class FollowUpCreate(RequestModel):
    content: str
    status: str | None = None
    next_follow_up_at: datetime | None = Field(
        default=None,
        description=(
            "同时设置下次跟进时间（不带时区按系统时区）；传 null 清除计划；不传时，"
            "今天及以前的跟进计划视为已完成并清除，以后的计划保留"
        ),
    )
    next_follow_up_note: str | None = Field(default=None, description="下次跟进备注（最多 200 字）")

    @field_validator("next_follow_up_note")
    @classmethod
    def _plan_note(cls, v: str | None) -> str | None:
        return clean_plan_note(v)

    @model_validator(mode="after")
    def _note_needs_time(self) -> FollowUpCreate:
        if self.next_follow_up_note and self.next_follow_up_at is None:
            raise ValueError("填写下次跟进备注时需要同时填写下次跟进时间")
        return self

    @field_validator("content")
    @classmethod
    def _content(cls, v: str) -> str:
        return clean_text(v, "跟进内容", 2000, lines=True)

    @field_validator("status")
    @classmethod
    def _status(cls, v: str | None) -> str | None:
        return check_status(v)


class FollowUpOut(CamelModel):
    id: int
    customer_id: int
    user_id: int
    user_name: str | None = None
    content: str
    status: str | None
    created_at: datetime


class FollowUpPlanItem(CamelModel):
    """One lead on the follow-up list of a day."""

    customer_id: int
    customer_name: str
    phone: str
    status: str
    owner_id: int
    owner_name: str | None
    planned_at: datetime
    note: str | None
    overdue: bool = Field(description="计划时间已过且此后未跟进")
    last_follow_up_at: datetime | None


class FollowUpPlanList(CamelModel):
    date: str = Field(description="所查日期（系统时区），YYYY-MM-DD")
    scope: Literal["mine", "team"]
    items: list[FollowUpPlanItem]
    total: int
    truncated: bool = Field(default=False, description="超过上限只返回了前面的部分")


ImportField = Literal["name", "phone", "source", "assignee", "note", "status"]


class ImportColumn(CamelModel):
    header: str = Field(description="表头原文")
    field: ImportField


class ImportIssue(CamelModel):
    field: ImportField | None = Field(default=None, description="出错的列；None 表示整行")
    message: str


class ImportValues(CamelModel):
    """A row's values as they will be saved (cleaned the way POST /api/customers cleans them)."""

    name: str
    phone: str
    source: str
    note: str
    status: str
    assignee: str = Field(description="表格中填写的负责人")
    assigned_to: int | None = Field(default=None, description="负责人对应的用户 id；空 = 进入公海")
    assignee_name: str | None = None


class ImportRowOut(CamelModel):
    row: int = Field(description="该行在表格中的行号（与 Excel 中看到的一致）")
    ok: bool = True
    values: ImportValues
    errors: list[ImportIssue] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    customer_id: int | None = Field(default=None, description="导入后创建的线索 id")


class ImportResult(CamelModel):
    dry_run: bool
    format: Literal["csv", "tsv", "xlsx"]
    header_row: int
    columns: list[ImportColumn]
    ignored_columns: list[str] = Field(description="未识别、已忽略的列")
    total: int
    valid: int
    invalid: int
    created: list[int] = Field(default_factory=list, description="新建线索的 id（dryRun=false）")
    skipped: list[int] = Field(default_factory=list, description="因错误未导入的行号（dryRun=false）")
    rows: list[ImportRowOut]
