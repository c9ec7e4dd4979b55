"""What a WeCom member sees: a textcard per notification, or one digest card for those folded together.

WeCom limits a card's title to 128 and its description to 512 UTF-8 bytes; every stored value is
shown as one line, so data from before input was checked (or from another system) cannot fake lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from leadpush.config import Settings
from leadpush.notify.channels.base import DeliveryJob, FoldedNote
from leadpush.wechat.format import clean_text, digest_headline, format_time, mask_phone
from leadpush.wecom.pacing import Folded

TITLE_BYTES = 128
DESCRIPTION_BYTES = 512


def one_line(value: Any) -> str:
    """A stored value as one line of a card: line breaks (CR, LF, U+0085, U+2028/9) and bidi controls
    in data written before input refused them, or by another system, must not fake card lines."""
    return clean_text(str(value or ""))


def cut_bytes(text: str, limit: int) -> str:
    """At most `limit` UTF-8 bytes, cut on a character boundary with an ellipsis."""
    if len(text.encode()) <= limit:
        return text
    out = text.encode()[: limit - 3].decode(errors="ignore")
    return out + "…"


def link(s: Settings, notice: int, customer_id: Any = None) -> str:
    """The console page a card opens: the lead's page, or the lead list.

    It names the notice (`?notice=<id>`): WeCom's duplicate check hides a card that repeats one shown within
    the interval, which must catch a re-send of this notice after a crash, never another notice that reads
    the same (the same lead given back to the same person within the minute).
    """
    base = s.public_url.rstrip("/")
    if customer_id in (None, ""):
        page = base + s.console_list_path
    else:
        page = base + s.console_customer_path.replace("{customerId}", str(customer_id))
    # Before a fragment (a front end's hash route stays as it is configured).
    page, hash_mark, fragment = page.partition("#")
    return f"{page}{'&' if '?' in page else '?'}notice={notice}{hash_mark}{fragment}"


def textcard(s: Settings, job: DeliveryJob) -> dict[str, str]:
    p = job.payload
    when = format_time(p.get("assignTime"), s.tz, job.created_at)
    if job.kind == "customer_assigned":
        phone = one_line(p.get("customerPhone"))
        lines = [
            f"客户：{one_line(p.get('customerName')) or '-'}",
            f"电话：{(mask_phone(phone) if s.wecom_mask_phone else phone) or '-'}",
            f"来源：{one_line(p.get('source')) or '-'}",
            f"分配人：{one_line(p.get('actorName')) or '系统'}",
            f"时间：{when}",
        ]
        url = link(s, job.notification_id, p.get("customerId"))
    elif job.kind in ("customers_assigned", "customers_recycled"):
        names = [one_line(c.get("customerName")) for c in p.get("customers") or [] if isinstance(c, dict)]
        lines = [one_line(job.body)] if job.body else []
        if names:
            lines.append("客户：" + "、".join(names[:10]) + (" 等" if len(names) > 10 else ""))
        lines.append(f"时间：{when}")
        url = link(s, job.notification_id)
    else:
        lines = [one_line(job.body or job.title), f"时间：{when}"]
        url = link(s, job.notification_id, p.get("customerId"))
    return {
        "title": cut_bytes(one_line(job.title) or "新通知", TITLE_BYTES),
        "description": cut_bytes("\n".join(lines), DESCRIPTION_BYTES),
        "url": url,
        "btntxt": "查看",
    }


def carried(job: DeliveryJob, deferred: Sequence[Folded] = ()) -> list[Folded | FoldedNote]:
    """Everything one digest card shows besides the job itself: the notices the delivery carries (folded at
    claim, notify/digest.py), and the deliveries pacing deferred with what each of them carries."""
    out: list[Folded | FoldedNote] = list(job.folded)
    for f in deferred:
        out.append(f)
        out.extend(f.notes)
    return out


def digest_card(s: Settings, job: DeliveryJob, folded: Sequence[Folded | FoldedNote]) -> dict[str, str]:
    """One card for several notices: 您有 5 条新线索 (or 新通知) and a line per notice."""
    items = [(job.kind, job.title, job.payload)] + [(f.kind, f.title, f.payload) for f in folded]
    title = digest_headline([(kind, p) for kind, _, p in items])
    lines = [f"· {one_line(t)}" for _, t, _ in items]
    description = ""
    for i, line in enumerate(lines):
        more = f"\n……等 {len(lines)} 条" if i < len(lines) - 1 else ""
        candidate = (description + "\n" if description else "") + line
        if len((candidate + more).encode()) > DESCRIPTION_BYTES:
            description += f"\n……等 {len(lines)} 条"
            break
        description = candidate
    return {
        "title": cut_bytes(title, TITLE_BYTES),
        "description": cut_bytes(description, DESCRIPTION_BYTES),
        "url": link(s, job.notification_id),
        "btntxt": "查看",
    }
