"""API shapes of lead sources and of what the inbound endpoints answer."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, field_validator

from leadpush.leads.schemas import clean_tags, clean_text
from leadpush.schemas import CamelModel, RequestModel

DuplicatePolicy = Literal["merge", "flag"]
LeadField = Literal["name", "phone", "region", "tags", "note", "externalId"]
Duplicate = Literal["external_id", "phone"]

MAX_MAPPING = 50


def clean_key(value: str) -> str:
    key = clean_text(value, "来源标识", 100)
    if "/" in key or "\\" in key:
        raise ValueError("来源标识不能包含 / 或 \\")
    return key


def clean_mapping(value: dict[str, LeadField]) -> dict[str, LeadField]:
    if len(value) > MAX_MAPPING:
        raise ValueError(f"字段映射最多 {MAX_MAPPING} 项")
    out: dict[str, LeadField] = {}
    for incoming, field in value.items():
        name = clean_text(incoming, "来源字段名", 100)
        if any(not part for part in name.split(".")):
            raise ValueError(f"来源字段名「{name}」格式不正确：嵌套字段请写成 contact.mobile")
        out[name] = field
    return out


class LeadSourceFields(RequestModel):
    @field_validator("key", check_fields=False)
    @classmethod
    def _key(cls, v: str | None) -> str | None:
        return None if v is None else clean_key(v)

    @field_validator("name", check_fields=False)
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return None if v is None else clean_text(v, "来源名称", 64)

    @field_validator("field_mapping", check_fields=False)
    @classmethod
    def _mapping(cls, v: dict[str, LeadField] | None) -> dict[str, LeadField] | None:
        return None if v is None else clean_mapping(v)

    @field_validator("default_region", check_fields=False)
    @classmethod
    def _region(cls, v: str | None) -> str | None:
        return None if v is None else clean_text(v, "默认地区", 64, required=False)

    @field_validator("default_tags", check_fields=False)
    @classmethod
    def _tags(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else clean_tags(v)


class LeadSourceCreate(LeadSourceFields):
    key: str = Field(description="来源标识：写在线索的 source 上，也是表单 webhook 地址的一部分，如 抖音表单")
    name: str = Field(description="来源名称（显示用）")
    field_mapping: dict[str, LeadField] = Field(
        default_factory=dict, description="来源字段名（可为 contact.mobile 这样的嵌套路径）→ leadpush 字段"
    )
    duplicate_policy: DuplicatePolicy = Field(
        default="merge", description="电话重复时：merge 合并到已有线索并通知负责人；flag 新建并标记疑似重复"
    )
    default_region: str = ""
    default_tags: list[str] = Field(default_factory=list, max_length=20)
    enabled: bool = True


class LeadSourceUpdate(LeadSourceFields):
    key: str | None = None
    name: str | None = None
    field_mapping: dict[str, LeadField] | None = None
    duplicate_policy: DuplicatePolicy | None = None
    default_region: str | None = None
    default_tags: list[str] | None = Field(default=None, max_length=20)
    enabled: bool | None = None


class LeadSourceOut(CamelModel):
    id: int
    key: str
    name: str
    field_mapping: dict[str, str]
    duplicate_policy: DuplicatePolicy
    default_region: str
    default_tags: list[str]
    enabled: bool
    token_prefix: str = Field(description="接入令牌的前几个字符（令牌本身只在创建 / 轮换时显示一次）")
    created_at: datetime
    updated_at: datetime
    rotated_at: datetime | None


class LeadSourceSecrets(CamelModel):
    """Answered once, on creation and rotation: the only time the token and the secret are shown."""

    source: LeadSourceOut
    token: str = Field(description="接入令牌：POST /api/leads/inbound 的 Authorization: Bearer <token>")
    signing_secret: str = Field(description="表单 webhook 的签名密钥（HMAC-SHA256）")
    inbound_url: str
    form_url: str


class FieldIssue(CamelModel):
    field: str
    message: str


class InboundItemOut(CamelModel):
    index: int = Field(description="该线索在请求中的序号（从 0 开始）")
    ok: bool
    customer_id: int | None = Field(default=None, description="新建的、已存在的或被合并到的线索 id")
    created: bool = False
    duplicate: Duplicate | None = Field(
        default=None, description="external_id = 重复提交，答复已有线索；phone = 电话与已有未成交线索相同"
    )
    merged: bool = Field(default=False, description="已合并到已有线索（duplicatePolicy = merge）")
    duplicate_of: int | None = Field(default=None, description="新建并标记为疑似重复时：已有线索的 id")
    owner_id: int | None = Field(default=None, description="线索当前负责人（分配规则可能已分配）")
    errors: list[FieldIssue] = Field(default_factory=list)


class InboundBatchOut(CamelModel):
    total: int
    created: int
    duplicates: int = Field(description="因 externalId 重复未新建的条数")
    merged: int
    flagged: int
    failed: int
    items: list[InboundItemOut]
