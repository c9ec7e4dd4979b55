"""Subscribe-message values formatted to WeChat's type rules (wechat-platform.md), never empty."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

THING_MAX = 20
PHONE_MAX = 17
ELLIPSIS = "…"


def value_type(key: str) -> str:
    """`thing12` -> `thing`: WeChat derives the type from the key without its trailing digits."""
    return key.rstrip("0123456789")


def cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[: limit - 1] + ELLIPSIS


def mask_phone(phone: str) -> str:
    digits = re.sub(r"\D", "", phone)
    if len(digits) >= 7:
        return digits[:3] + "*" * (len(digits) - 7) + digits[-4:] if len(digits) > 7 else digits
    return phone


def format_phone(phone: str, mask: bool = False) -> str:
    cleaned = re.sub(r"[^0-9+\-]", "", phone)
    if mask:
        masked = mask_phone(cleaned)
        # '*' is not a phone symbol WeChat accepts everywhere; keep digits and the mask only when valid.
        cleaned = masked if masked else cleaned
    return cleaned[:PHONE_MAX] or "-"


def format_time(value: datetime | str, tz: ZoneInfo) -> str:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(tz).strftime("%Y-%m-%d %H:%M")


def format_value(kind: str, raw: Any, tz: ZoneInfo, mask_phone_numbers: bool = False) -> str:
    text = "" if raw is None else str(raw)
    if kind == "thing":
        return cut(text, THING_MAX) or "无"
    if kind == "phone_number":
        return format_phone(text, mask_phone_numbers)
    if kind in ("time", "date"):
        return format_time(raw, tz) if raw else format_time(datetime.now(tz), tz)
    if kind == "number":
        return re.sub(r"[^0-9.]", "", text)[:32] or "0"
    if kind == "character_string":
        return re.sub(r"[^0-9A-Za-z\-_.:/#@+]", "", text)[:32] or "-"
    if kind == "name":
        return cut(text, 10) or "无"
    if kind == "phrase":
        return (re.sub(r"[^\u4e00-\u9fff]", "", text)[:5]) or "无"
    return cut(text, THING_MAX) or "-"


def parse_field_map(raw: str) -> dict[str, str]:
    data = json.loads(raw)
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError("LEADPUSH_WECHAT_FIELD_MAP must be a JSON object of strings")
    return data


def template_data(
    fields: dict[str, Any], field_map: dict[str, str], tz: ZoneInfo, mask_phone_numbers: bool = False
) -> dict[str, dict[str, str]]:
    """Build `data` for subscribe/send from notification fields through the configured mapping."""
    return {
        key: {"value": format_value(value_type(key), fields.get(field), tz, mask_phone_numbers)}
        for key, field in field_map.items()
    }


def template_fields(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The values a template can map from: a digest reads as one message ("3条新线索")."""
    if kind in ("customers_assigned", "customers_recycled"):
        first = (payload.get("customers") or [{}])[0]
        return {
            **payload,
            "customerName": f"{payload.get('count', 0)}条新线索",
            "customerPhone": first.get("customerPhone", ""),
            "source": first.get("source") or "批量分配",
            "customerId": first.get("customerId", ""),
        }
    return payload


def page_for(template: str, payload: dict[str, Any]) -> str:
    return template.replace("{customerId}", str(payload.get("customerId", "")))
