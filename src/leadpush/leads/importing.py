"""Checking an imported sheet row by row: which column is which, and whether each row is a valid lead.

A row is checked with `CustomerCreate`, the very model POST /api/customers validates with, so an import
and a single create never disagree about what a valid name or phone is. The person responsible
(负责人) is named by text in a sheet; it is resolved here to one user the importer may assign to, or the
row says why not. Creating the valid rows is an action (`assignment.actions.import_customers`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from leadpush.errors import ApiError
from leadpush.leads.models import STATUSES, Customer
from leadpush.leads.schemas import CustomerCreate, ImportColumn, ImportIssue, ImportRowOut, ImportValues
from leadpush.leads.sheets import Sheet
from leadpush.permissions import check_can_assign, visible_filter
from leadpush.pools.access import no_hidden_phone
from leadpush.users.models import User

# Header texts people use, compared after dropping blanks, "*" (required marks) and case.
HEADERS: dict[str, tuple[str, ...]] = {
    "name": ("姓名", "客户名称", "客户姓名", "客户", "名称", "联系人", "name", "customername", "customer"),
    "phone": ("电话", "手机", "手机号", "手机号码", "电话号码", "联系电话", "联系方式", "phone", "mobile", "tel"),
    "source": ("来源", "线索来源", "客户来源", "渠道", "source", "channel"),
    "assignee": ("负责人", "分配给", "跟进人", "销售", "assignee", "owner", "assignedto"),
    "note": ("备注", "说明", "note", "notes", "remark", "remarks"),
    "status": ("状态", "线索状态", "status"),
}
LABELS = {"name": "姓名", "phone": "电话", "source": "来源", "assignee": "负责人", "note": "备注", "status": "状态"}
STATUS_WORDS = {"新线索": "new", "跟进中": "following", "已成交": "won", "已流失": "lost", "无效": "invalid"}
# Which CustomerCreate field an error names, as the sheet's column.
FIELD_OF_ERROR = {"name": "name", "phone": "phone", "source": "source", "note": "note", "status": "status"}


def header_key(text: str) -> str:
    return re.sub(r"[\s*＊_\-:：()（）]", "", text).lower()


KNOWN = {header_key(alias): key for key, aliases in HEADERS.items() for alias in aliases}


@dataclass
class Columns:
    index: dict[str, int]  # field -> column position
    found: list[ImportColumn]
    ignored: list[str]


def map_columns(sheet: Sheet) -> Columns:
    index: dict[str, int] = {}
    found: list[ImportColumn] = []
    ignored: list[str] = []
    for position, text in enumerate(sheet.header.cells):
        key = KNOWN.get(header_key(text))
        if key is None or key in index:
            if text.strip():
                ignored.append(text.strip()[:50])
            continue
        index[key] = position
        found.append(ImportColumn(header=text.strip(), field=key))  # type: ignore[arg-type]
    missing = [LABELS[k] for k in ("name", "phone") if k not in index]
    if missing:
        raise ApiError(
            422,
            "import_no_header",
            f"第 {sheet.header.number} 行应是表头，且至少包含“姓名”和“电话”两列（没有找到：{'、'.join(missing)}）",
            {"headerRow": sheet.header.number, "header": [c[:50] for c in sheet.header.cells if c.strip()][:MAX_SHOWN]},
        )
    return Columns(index, found, ignored[:MAX_SHOWN])


MAX_SHOWN = 60


@dataclass
class CheckedRow:
    out: ImportRowOut
    item: CustomerCreate | None = None  # set when the row is valid
    assignee_text: str = ""


@dataclass
class Assignees:
    """Who the importer may name as 负责人: each text maps to one user, or to why not."""

    found: dict[str, User] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)


def resolve_assignees(session: Session, actor: User, texts: Iterable[str]) -> Assignees:
    """Match each text to an active user by name or WeCom user id (or login name, where users have one),
    among the users the actor may assign to; ambiguous, unknown, inactive and out-of-team are problems."""
    wanted = {t for t in texts if t}
    out = Assignees()
    if not wanted:
        return out
    columns = [User.name, User.wecom_userid]
    login = getattr(User, "login_name", None)  # sign-in names, once users have them
    if login is not None:
        columns.append(login)
    candidates: dict[str, list[User]] = {t: [] for t in wanted}
    for column in columns:
        for user in session.scalars(select(User).where(column.in_(list(wanted)))):
            for text in wanted:
                if getattr(user, column.key) == text and user not in candidates[text]:
                    candidates[text].append(user)
    for text, users in candidates.items():
        active = [u for u in users if u.active]
        allowed = [u for u in active if may_assign(actor, u)]
        if len(allowed) == 1:
            out.found[text] = allowed[0]
        elif len(allowed) > 1:
            out.problems[text] = f"负责人“{text}”有 {len(allowed)} 个同名用户，请改填企业微信账号或登录名"
        elif active:
            out.problems[text] = f"负责人“{text}”不在您的团队，只能分配给本团队成员"
        elif users:
            out.problems[text] = f"负责人“{text}”已停用"
        else:
            out.problems[text] = f"找不到负责人“{text}”"
    return out


def may_assign(actor: User, target: User) -> bool:
    try:
        check_can_assign(actor, None, target)
    except ApiError:
        return False
    return True


def cell(cells: list[str], index: dict[str, int], key: str) -> str:
    position = index.get(key)
    return cells[position] if position is not None and position < len(cells) else ""


def issue_of(error: dict[str, object]) -> ImportIssue:
    loc = error.get("loc") or ()
    name = str(loc[0]) if isinstance(loc, tuple) and loc else ""
    message = str(error.get("msg", "格式不正确")).removeprefix("Value error, ")
    return ImportIssue(field=FIELD_OF_ERROR.get(name), message=message)  # type: ignore[arg-type]


def check_row(number: int, cells: list[str], index: dict[str, int]) -> CheckedRow:
    raw = {key: cell(cells, index, key) for key in HEADERS}
    status_text = raw["status"].strip()
    status = STATUS_WORDS.get(status_text, status_text.lower()) if status_text else "new"
    values = ImportValues(
        name=raw["name"].strip(),
        phone=raw["phone"].strip(),
        source=raw["source"].strip(),
        note=raw["note"].strip(),
        status=status if status in STATUSES else status_text,
        assignee=raw["assignee"].strip(),
    )
    errors: list[ImportIssue] = []
    item: CustomerCreate | None = None
    if status not in STATUSES:
        errors.append(ImportIssue(field="status", message=f"状态必须是 {'、'.join(STATUS_WORDS)} 之一"))
    try:
        item = CustomerCreate(name=raw["name"], phone=raw["phone"], source=raw["source"], note=raw["note"])
    except ValidationError as exc:
        errors.extend(issue_of(dict(e)) for e in exc.errors())
    if item is not None:
        values.name, values.phone, values.source, values.note = item.name, item.phone, item.source, item.note
        item.status = status if status in STATUSES else "new"
    if len(values.assignee) > 64:
        errors.append(ImportIssue(field="assignee", message="负责人不能超过 64 个字符"))
    return CheckedRow(ImportRowOut(row=number, values=values, errors=errors), None if errors else item, values.assignee)


def check_rows(session: Session, actor: User, sheet: Sheet, columns: Columns) -> list[CheckedRow]:
    """Every data row checked: fields, 负责人, and warnings about phones seen twice."""
    checked = [check_row(r.number, r.cells, columns.index) for r in sheet.rows]
    assignees = resolve_assignees(session, actor, {c.assignee_text for c in checked if len(c.assignee_text) <= 64})
    for row in checked:
        text = row.assignee_text
        if not text or len(text) > 64:
            continue
        if text in assignees.problems:
            row.out.errors.append(ImportIssue(field="assignee", message=assignees.problems[text]))
            row.item = None
        else:
            user = assignees.found[text]
            row.out.values.assigned_to, row.out.values.assignee_name = user.id, user.name
            if row.item is not None:
                row.item.assigned_to = user.id
    warn_duplicates(session, actor, checked)
    for row in checked:
        row.out.ok = not row.out.errors
    return checked


def warn_duplicates(session: Session, actor: User, rows: list[CheckedRow]) -> None:
    """The same phone twice in the file, or already among the leads the importer can see: a warning, not an
    error (two people may share a company number), so the person decides."""
    first: dict[str, int] = {}
    for row in rows:
        phone = row.out.values.phone
        if not phone or any(i.field == "phone" for i in row.out.errors):
            continue
        if phone in first:
            row.out.warnings.append(f"电话与第 {first[phone]} 行相同")
        else:
            first[phone] = row.out.row
    phones = list(first)
    existing: set[str] = set()
    for start in range(0, len(phones), 500):
        existing.update(
            session.scalars(
                # A hidden phone (in a pool that hides phones) is not matched: the warning would reveal it.
                select(Customer.phone).where(
                    Customer.phone.in_(phones[start : start + 500]), visible_filter(actor), no_hidden_phone()
                )
            )
        )
    for row in rows:
        if row.out.values.phone in existing and not any(i.field == "phone" for i in row.out.errors):
            row.out.warnings.append("系统中已有该电话的线索")
