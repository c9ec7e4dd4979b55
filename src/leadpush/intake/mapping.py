"""From what a form or an ad platform sends to a lead: the source's field mapping, then the same cleaning
as POST /api/customers. Pure: no database, no HTTP.

Rules (the README says the same):
- a mapped field ("contact.mobile" → phone) fills its leadpush field; several incoming fields mapped onto
  note are joined line by line, onto tags are combined (a list, or text split at commas);
- leadpush's own names (name, phone, region, tags, note, externalId) are read as they are when no mapped
  field filled them;
- any other top-level field is kept, as "字段：值" lines at the end of the note (forms carry custom
  questions a salesperson wants to read);
- phone is required; a missing name becomes 未留姓名; region and tags fall back to the source's defaults.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from leadpush.leads.schemas import PHONE_RE, clean_tags, clean_text
from leadpush.text import has_lone_surrogate, single_line

LEAD_FIELD_LABELS = {
    "name": "客户姓名",
    "phone": "电话",
    "region": "地区",
    "tags": "标签",
    "note": "备注",
    "externalId": "externalId",
}
NO_NAME = "未留姓名"
NOTE_MAX = 2000
EXTRA_VALUE_MAX = 200
MAX_TAGS = 20
TAG_SPLIT = re.compile(r"[,，;；|]")


@dataclass
class LeadIn:
    """One inbound lead, mapped and cleaned, ready to be saved."""

    name: str
    phone: str
    region: str
    tags: list[str]
    note: str
    external_id: str | None


@dataclass
class Issue:
    field: str
    message: str


@dataclass
class Defaults:
    region: str = ""
    tags: list[str] = field(default_factory=list)


_MISSING = object()


def resolve(data: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path ("contact.mobile"), or _MISSING; a key with a dot in it is tried whole first."""
    if path in data:
        return data[path]
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def as_text(value: Any) -> str | None:
    """A scalar as text (numbers too: a phone sent as a JSON number); None for objects and lists."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else str(value)
    return None


def _present(value: Any) -> bool:
    return value is not _MISSING and value is not None and value != "" and value != []


def gather(raw: Mapping[str, Any], mapping: Mapping[str, str]) -> tuple[dict[str, list[Any]], list[tuple[str, Any]]]:
    """The values for each leadpush field, and the unmapped top-level fields (kept in the note)."""
    values: dict[str, list[Any]] = {f: [] for f in LEAD_FIELD_LABELS}
    consumed: set[str] = set()
    for path, target in mapping.items():
        consumed.add(path if path in raw else path.split(".", 1)[0])
        value = resolve(raw, path)
        if _present(value) and target in values:
            values[target].append(value)
    for name in LEAD_FIELD_LABELS:
        if name in raw and name not in consumed:
            consumed.add(name)
            if not values[name] and _present(raw[name]):
                values[name].append(raw[name])
    extras = [(k, v) for k, v in raw.items() if k not in consumed and _present(v)]
    return values, extras


def _one_text(values: list[Any], name: str, issues: list[Issue]) -> str | None:
    if not values:
        return None
    text = as_text(values[0])
    if text is None:
        issues.append(Issue(name, f"{LEAD_FIELD_LABELS[name]}必须是文本或数字"))
    return text


def _clean(issues: list[Issue], name: str, fn: Any, *args: Any, **kw: Any) -> Any:
    try:
        return fn(*args, **kw)
    except ValueError as exc:
        issues.append(Issue(name, str(exc)))
        return None


def clean_phone(value: str) -> str:
    cleaned = re.sub(r"[\s\-()（）]", "", single_line(value, "电话号码"))
    if not PHONE_RE.match(cleaned):
        raise ValueError("电话号码格式不正确")
    return cleaned


def _tags(values: list[Any], defaults: list[str], issues: list[Issue]) -> list[str]:
    raw: list[str] = []
    for value in values:
        if not isinstance(value, list) and as_text(value) is None:
            issues.append(Issue("tags", "标签必须是文本或文本数组"))
            return []
        items = value if isinstance(value, list) else TAG_SPLIT.split(as_text(value) or "")
        for item in items:
            text = as_text(item)
            if text is None:
                issues.append(Issue("tags", "标签必须是文本"))
                return []
            raw.append(text)
    tags = _clean(issues, "tags", clean_tags, raw + list(defaults)) or []
    if len(tags) > MAX_TAGS:
        issues.append(Issue("tags", f"标签最多 {MAX_TAGS} 个"))
    return tags


def _extra_line(key: str, value: Any) -> str:
    text = as_text(value)
    if text is None:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    key = " ".join(str(key).split())[:50]
    text = " ".join(text.split())
    if len(text) > EXTRA_VALUE_MAX:
        text = text[: EXTRA_VALUE_MAX - 1] + "…"
    return f"{key}：{text}"


def _note(values: list[Any], extras: list[tuple[str, Any]], issues: list[Issue]) -> str:
    parts: list[str] = []
    for value in values:
        text = as_text(value)
        if text is None:
            issues.append(Issue("note", "备注必须是文本"))
            return ""
        parts.append(text)
    note = _clean(issues, "note", clean_text, "\n".join(parts), "备注", NOTE_MAX, required=False, lines=True) or ""
    if extras:
        lines = [_extra_line(k, v) for k, v in extras]
        extra = _clean(issues, "note", clean_text, "\n".join(lines), "其他字段", 100_000, required=False, lines=True)
        if extra:
            note = (note + "\n" if note else "") + extra
            if len(note) > NOTE_MAX:
                note = note[: NOTE_MAX - 1] + "…"
    return note


def read_lead(raw: Any, mapping: Mapping[str, str], defaults: Defaults) -> LeadIn | list[Issue]:
    """One incoming object as a lead, or what is wrong with it (every field's problem, not only the first)."""
    if not isinstance(raw, Mapping):
        return [Issue("body", "每条线索必须是 JSON 对象")]
    if has_lone_surrogate(raw):
        return [Issue("body", "含有无法识别的字符（不成对的 Unicode 代理项）")]
    values, extras = gather(raw, mapping)
    issues: list[Issue] = []
    name_text = _one_text(values["name"], "name", issues)
    name = _clean(issues, "name", clean_text, name_text, "客户姓名", 100) if name_text else None
    phone_text = _one_text(values["phone"], "phone", issues)
    phone = _clean(issues, "phone", clean_phone, phone_text) if phone_text is not None else None
    if phone_text is None and not any(i.field == "phone" for i in issues):
        issues.append(Issue("phone", "缺少电话号码"))
    region_text = _one_text(values["region"], "region", issues)
    region = _clean(issues, "region", clean_text, region_text or "", "地区", 64, required=False) or defaults.region
    tags = _tags(values["tags"], defaults.tags, issues)
    note = _note(values["note"], extras, issues)
    ext_text = _one_text(values["externalId"], "externalId", issues)
    external_id = _clean(issues, "externalId", clean_text, ext_text, "externalId", 128) if ext_text else None
    if issues:
        return issues
    return LeadIn(
        name=name or NO_NAME,
        phone=phone or "",
        region=region,
        tags=tags,
        note=note,
        external_id=external_id or None,
    )
