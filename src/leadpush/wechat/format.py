"""Subscribe-message values formatted to WeChat's type rules (wechat-platform.md), never empty.

A value that breaks its type rule costs the message (47003 is permanent), so every formatter here
errs on the safe side: lengths are counted in UTF-16 units (an emoji counts twice, as some WeChat
clients count it), cuts never split an emoji sequence, and every type has a non-empty fallback.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from leadpush.notify.channels.base import FoldedNote

THING_MAX = 20
PHONE_MAX = 17
ELLIPSIS = "…"
DIGEST_KINDS = ("customers_assigned", "customers_recycled")
ASSIGNED_KINDS = ("customer_assigned", "customers_assigned")

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_PHONE_KEEP = re.compile(r"[^0-9+\-()]")
_ASCII_LETTERS = re.compile(r"[^A-Za-z]")


def value_type(key: str) -> str:
    """`thing12` -> `thing`: WeChat derives the type from the key without its trailing digits."""
    return key.rstrip("0123456789")


def utf16_len(text: str) -> int:
    """UTF-16 code units (what WeChat counts): two for a character beyond the BMP, one for any other."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _extends(ch: str, prev: str | None) -> bool:
    """Whether `ch` belongs to the grapheme cluster before it (good enough for emoji and accents)."""
    cp = ord(ch)
    return (
        prev == "\u200d"
        or ch == "\u200d"
        or 0xFE00 <= cp <= 0xFE0F  # variation selectors
        or 0x1F3FB <= cp <= 0x1F3FF  # skin tones
        or 0xE0020 <= cp <= 0xE007F  # tag sequences (subdivision flags)
        or unicodedata.category(ch) in ("Mn", "Me", "Mc")
    )


def clusters(text: str) -> list[str]:
    out: list[str] = []
    prev: str | None = None
    for ch in text:
        is_ri = 0x1F1E6 <= ord(ch) <= 0x1F1FF
        if out and (_extends(ch, prev) or (is_ri and len(out[-1]) == 1 and 0x1F1E6 <= ord(out[-1]) <= 0x1F1FF)):
            out[-1] += ch
        else:
            out.append(ch)
        prev = ch
    return out


def clean_text(text: str) -> str:
    """One line: control and invisible format characters out (the emoji joiner stays), spaces collapsed."""
    if text.isprintable():  # no control (Cc) and no format (Cf) character: nothing to take out (the usual case)
        return " ".join(text.split())
    kept = "".join(
        " " if unicodedata.category(c) == "Cc" else c
        for c in text
        if unicodedata.category(c) != "Cf" or c == "\u200d" or 0xE0020 <= ord(c) <= 0xE007F
    )
    return " ".join(kept.split())


def cut(text: str, limit: int) -> str:
    """At most `limit` UTF-16 units; a cut text ends with an ellipsis and never splits an emoji."""
    text = clean_text(text)
    if utf16_len(text) <= limit:
        return text
    out, used = [], 0
    for cluster in clusters(text):
        width = utf16_len(cluster)
        if used + width > limit - 1:
            break
        out.append(cluster)
        used += width
    return "".join(out).rstrip() + ELLIPSIS


def mask_phone(phone: str) -> str:
    """138****8000: the first three and last four digits of a long number; short ones keep the last four."""
    digits = re.sub(r"\D", "", phone)
    if len(digits) >= 8:
        return digits[:3] + "*" * (len(digits) - 7) + digits[-4:]
    if len(digits) >= 5:
        return "*" * (len(digits) - 4) + digits[-4:]
    return digits


class ValueRefused(ValueError):
    """A value that cannot be put in its field without saying something else: the message is refused (a
    clear, permanent reason, so another channel can take over), never sent with a wrong value."""


def format_phone(phone: str, mask: bool = False) -> str:
    """At most 17 digits or symbols: spaces and letters dropped, symbols dropped first if too long.

    A number of more than 17 digits does not fit: cut, it would be another number, so it is refused
    (ValueRefused). Masked, it still fits: the first three and last four digits around at most 10 stars.
    """
    digits = re.sub(r"\D", "", phone)
    if mask:
        value = mask_phone(phone)
        if len(value) > PHONE_MAX:
            value = digits[:3] + "*" * (PHONE_MAX - 7) + digits[-4:]
    else:
        if len(digits) > PHONE_MAX:
            shown = cut(phone, 40)
            raise ValueRefused(
                f"电话号码超过 {PHONE_MAX} 位，无法填入订阅消息的 phone_number 字段：{shown}（{len(digits)} 位数字）"
            )
        value = _PHONE_KEEP.sub("", phone)
        if len(value) > PHONE_MAX or not re.search(r"\d", value):
            value = digits
    return value if re.search(r"\d", value) else "0"


def parse_time(value: Any, tz: ZoneInfo) -> datetime | None:
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, str) and value.strip():
        try:
            when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return when.replace(tzinfo=tz) if when.tzinfo is None else when


def format_time(value: Any, tz: ZoneInfo, fallback: datetime | None = None) -> str:
    """`YYYY-MM-DD HH:mm` in the deployment's timezone."""
    when = parse_time(value, tz) or fallback or datetime.now(tz)
    return when.astimezone(tz).strftime("%Y-%m-%d %H:%M")


def _number(text: str, max_digits: int) -> str | None:
    m = re.search(r"\d+(?:\.\d+)?", text.replace(",", ""))
    if m is None:
        return None
    whole, _, frac = m.group(0).partition(".")
    whole = whole[:max_digits]
    frac = frac[: max(0, max_digits - len(whole))]
    return whole + ("." + frac if frac else "")


def format_name(text: str) -> str:
    """At most 10 Chinese characters, or 20 letters and symbols (the two do not mix)."""
    text = clean_text(text)
    cjk = "".join(_CJK.findall(text))
    if cjk:
        return cjk[:10]
    latin = "".join(c for c in text if c.isascii() and (c.isalpha() or c in " .-'·")).strip()
    return latin[:20].strip() or "无"


def format_value(
    kind: str, raw: Any, tz: ZoneInfo, mask_phone_numbers: bool = False, now: datetime | None = None
) -> str:
    text = "" if raw is None else str(raw)
    if kind == "thing":
        return cut(text, THING_MAX) or "无"
    if kind == "phone_number":
        return format_phone(text, mask_phone_numbers)
    if kind in ("time", "date"):
        return format_time(raw, tz, now)
    if kind == "number":
        return _number(text, 32) or "0"
    if kind == "amount":
        return "¥" + (_number(text, 10) or "0")
    if kind == "character_string":
        return "".join(c for c in clean_text(text) if c.isascii() and c.isprintable() and c != " ")[:32] or "-"
    if kind == "letter":
        return _ASCII_LETTERS.sub("", text)[:32] or "NA"
    if kind == "symbol":
        return "".join(c for c in text if unicodedata.category(c)[0] in "PS")[:5] or "-"
    if kind == "car_number":
        return "".join(clean_text(text).split())[:8] or "无"
    if kind == "name":
        return format_name(text)
    if kind == "phrase":
        return "".join(_CJK.findall(text))[:5] or "无"
    return cut(text, THING_MAX) or "无"


def parse_field_map(raw: str) -> dict[str, str]:
    data = json.loads(raw)
    if (
        not isinstance(data, dict)
        or not data
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items())
    ):
        raise ValueError("LEADPUSH_WECHAT_FIELD_MAP must be a non-empty JSON object of strings")
    return data


def template_data(
    fields: dict[str, Any],
    field_map: dict[str, str],
    tz: ZoneInfo,
    mask_phone_numbers: bool = False,
    now: datetime | None = None,
) -> dict[str, dict[str, str]]:
    """Build `data` for subscribe/send from notification fields through the configured mapping.

    Raises ValueRefused when a value cannot fit its field without becoming another (a phone number of
    more than 17 digits).
    """
    return {
        key: {"value": format_value(value_type(key), fields.get(field), tz, mask_phone_numbers, now)}
        for key, field in field_map.items()
    }


def lead_count(kind: str, payload: dict[str, Any]) -> int:
    """How many leads a notice is about: a batch digest counts its leads, any other notice one."""
    if kind not in DIGEST_KINDS:
        return 1
    try:
        count = int(payload.get("count") or 0)
    except (TypeError, ValueError):
        count = 0
    return max(1, count or len(payload.get("customerIds") or []) or len(payload.get("customers") or []))


def digest_headline(items: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """What a digest of several notices (kind, payload) says: 您有 5 条新线索 when all are new leads (a
    batch counted by its leads), else 您有 5 条新通知."""
    if all(kind in ASSIGNED_KINDS for kind, _ in items):
        return f"您有 {sum(lead_count(kind, p) for kind, p in items)} 条新线索"
    return f"您有 {len(items)} 条新通知"


def _folded_fields(kind: str, payload: dict[str, Any], title: str, folded: Sequence[FoldedNote]) -> dict[str, Any]:
    """One message for a carrier and the notices it carries: the count as the headline, the first lead's
    phone, every source, the time of the newest notice."""
    items = [(kind, payload)] + [(n.kind, n.payload) for n in folded]
    headline = digest_headline(items)
    customers: list[dict[str, Any]] = []
    for k, p in items:
        if k in DIGEST_KINDS:
            customers.extend(c for c in p.get("customers") or [] if isinstance(c, dict))
        else:
            customers.append(p)
    first = next((c for c in customers if c.get("customerPhone")), customers[0] if customers else {})
    sources = [s for s in dict.fromkeys(str(c.get("source") or "").strip() for c in customers) if s]
    newest = max(folded, key=lambda n: (n.created_at, n.notification_id))
    return {
        **payload,
        "title": headline,
        "body": "、".join([title] + [n.title for n in folded]),
        "customerName": headline,
        "customerPhone": first.get("customerPhone", ""),
        "source": "、".join(sources) if sources else "合并通知",
        "customerId": first.get("customerId", ""),
        "assignTime": newest.payload.get("assignTime") or newest.created_at,
        "count": len(items),
    }


def template_fields(
    kind: str, payload: dict[str, Any], title: str = "", body: str = "", folded: Sequence[FoldedNote] = ()
) -> dict[str, Any]:
    """The values a template can map from; a digest reads as one message ("3条新线索"), and so does a
    delivery that carries others (`folded`: "您有 5 条新通知")."""
    if folded:
        return _folded_fields(kind, payload, title, folded)
    fields: dict[str, Any] = {"title": title, "body": body, **payload}
    if kind in DIGEST_KINDS:
        customers = [c for c in payload.get("customers") or [] if isinstance(c, dict)]
        first = customers[0] if customers else {}
        count = payload.get("count") or len(payload.get("customerIds") or []) or len(customers)
        sources = [s for s in dict.fromkeys(str(c.get("source") or "").strip() for c in customers) if s]
        label = "条新线索" if kind == "customers_assigned" else "条线索已收回"
        fields.update(
            customerName=f"{count}{label}",
            customerPhone=first.get("customerPhone", ""),
            source="、".join(sources) if sources else "批量分配",
            customerId=first.get("customerId", ""),
        )
        fields.setdefault("assignTime", first.get("assignTime"))
    return fields


def page_for(template: str, payload: dict[str, Any]) -> str:
    return template.replace("{customerId}", str(payload.get("customerId", "")))


def subscribe_page(kind: str, fields: dict[str, Any], lead_page: str, digest_page: str, folded: bool = False) -> str:
    """The page a subscribe message opens: the lead's page, or for a digest (a batch, or a delivery that
    carries others) the digest page ("" = home).

    The WeChat channel sends it and `notificationData` reports it; both call this, so they agree.
    """
    return digest_page if folded or kind in DIGEST_KINDS else page_for(lead_page, fields)
