"""Reading an uploaded sheet (CSV, pasted cells, Excel .xlsx) into rows of text, within safe limits.

Only the shape is read here: which row is the header, what each cell says, the row number a person sees
in their spreadsheet. What the cells mean (which column is the phone, is it a valid phone) is
`leads.importing`'s job. Every problem with the file as a whole is an ApiError (4xx) with a Chinese
message; nothing here may end in a 500, whatever bytes arrive.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Literal

from leadpush.errors import ApiError

Format = Literal["csv", "tsv", "xlsx"]

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CONTENT_TYPES: dict[str, Format | None] = {
    "text/csv": "csv",
    "application/csv": "csv",
    "text/tab-separated-values": "tsv",
    "text/plain": "tsv",  # cells pasted from Excel are tab-separated plain text
    XLSX_TYPE: "xlsx",
    # Windows reports a .csv as Excel's old type when Excel is installed; generic uploads say nothing:
    # for these the bytes decide.
    "application/vnd.ms-excel": None,
    "application/octet-stream": None,
}
ZIP_MAGIC = b"PK\x03\x04"
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # the old binary .xls (and .doc) container

# An .xlsx is a zip of XML: a small upload can unpack to gigabytes. The sizes the zip declares are checked
# before openpyxl opens it, and Python's zipfile never inflates an entry past its declared size (it
# stops there and fails the CRC check), so these bounds hold even for a zip that lies.
MAX_XLSX_UNPACKED_BYTES = 30_000_000
MAX_XLSX_ENTRIES = 2_000
# Columns beyond this are not read (a lead has a handful of fields; a sheet may have a few extra).
MAX_COLUMNS = 60


@dataclass
class SheetRow:
    number: int  # as the person sees it: the spreadsheet's row number, 1 = the first line
    cells: list[str]


@dataclass
class Sheet:
    format: Format
    header: SheetRow
    rows: list[SheetRow] = field(default_factory=list)


def refuse(status: int, code: str, message: str) -> ApiError:
    return ApiError(status, code, message)


def sniff_format(body: bytes, content_type: str) -> Format:
    """The file's format from its Content-Type, checked against its first bytes."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in CONTENT_TYPES:
        raise refuse(415, "import_unsupported_type", "请上传 CSV 或 Excel（.xlsx）文件，或粘贴从 Excel 复制的单元格")
    if body.startswith(OLE_MAGIC):
        raise refuse(
            415, "import_xls_unsupported", "不支持旧版 Excel（.xls）文件，请在 Excel 中另存为 .xlsx 或 CSV 后再导入"
        )
    declared = CONTENT_TYPES[media]
    if body.startswith(ZIP_MAGIC):
        if declared in (None, "xlsx"):
            return "xlsx"
        raise refuse(415, "import_not_text", "这是一个压缩文件（可能是 .xlsx），不是 CSV；请按 Excel 文件上传")
    if declared == "xlsx":
        raise refuse(415, "import_not_xlsx", "文件不是有效的 Excel（.xlsx）文件")
    return declared or "csv"


def read_sheet(body: bytes, content_type: str, max_rows: int) -> Sheet:
    """The header and the non-blank data rows of an upload (at most `max_rows` of them)."""
    if not body.strip():
        raise refuse(422, "import_empty", "文件是空的")
    fmt = sniff_format(body, content_type)
    rows = read_xlsx(body) if fmt == "xlsx" else read_text(body, fmt)
    return to_sheet(fmt, rows, max_rows)


def to_sheet(fmt: Format, rows: Iterator[SheetRow], max_rows: int) -> Sheet:
    header: SheetRow | None = None
    data: list[SheetRow] = []
    for row in rows:
        if not any(cell.strip() for cell in row.cells):
            continue  # blank rows are skipped, but the numbers of the rows after them stay as the sheet shows
        if header is None:
            header = row
            continue
        if len(data) >= max_rows:
            raise refuse(422, "import_too_many_rows", f"一次最多导入 {max_rows} 行，请把文件拆分后分批导入")
        data.append(row)
    if header is None:
        raise refuse(422, "import_empty", "文件中没有任何内容")
    return Sheet(fmt, header, data)


# --- CSV and pasted cells ----------------------------------------------------------------------------


def decode(body: bytes) -> str:
    """UTF-8 (with or without BOM), UTF-16 with BOM (Excel's "Unicode text"), else GB18030 (a superset of
    GBK: what Excel in China saves as CSV)."""
    if body.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return body.decode("utf-16")
        except UnicodeDecodeError:
            pass
    else:
        try:
            return body.decode("utf-8-sig")
        except UnicodeDecodeError:
            try:
                return body.decode("gb18030")
            except UnicodeDecodeError:
                pass
    raise refuse(422, "import_bad_encoding", "无法识别文件的编码，请保存为 UTF-8 或 GBK 编码的 CSV")


def pick_delimiter(first_line: str, fmt: Format) -> str:
    if fmt == "tsv":
        return "\t"
    # Excel saves "CSV" with the list separator of the machine's locale: usually a comma, sometimes a semicolon.
    counts = {d: first_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def read_text(body: bytes, fmt: Format) -> Iterator[SheetRow]:
    if b"\x00" in body and not body.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise refuse(415, "import_not_text", "文件不是文本格式的 CSV，请上传 CSV 或 Excel（.xlsx）文件")
    text = decode(body)
    first_line = text.lstrip("\r\n").split("\n", 1)[0]
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=pick_delimiter(first_line, fmt))
    number = 0
    try:
        for record in reader:
            # A quoted cell may span lines; the spreadsheet shows it as one row, so rows are counted, not lines.
            number += 1
            yield SheetRow(number, [cell for cell in record[:MAX_COLUMNS]])
    except csv.Error as exc:
        raise refuse(422, "import_bad_csv", f"CSV 格式错误（第 {number + 1} 行附近）：请检查引号是否成对") from exc


# --- Excel .xlsx -----------------------------------------------------------------------------------------


def check_zip(body: bytes) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise refuse(422, "import_bad_xlsx", "Excel 文件已损坏或不是 .xlsx 格式") from exc
    if len(entries) > MAX_XLSX_ENTRIES or sum(e.file_size for e in entries) > MAX_XLSX_UNPACKED_BYTES:
        raise refuse(
            413,
            "import_xlsx_too_large",
            f"Excel 文件解压后超过 {MAX_XLSX_UNPACKED_BYTES // 1_000_000} MB，请删除多余的工作表、图片和格式后再导入",
        )


def cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e17:
        return str(int(value))  # a phone typed into a number cell: 13800138000.0 is 13800138000
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S").removesuffix(" 00:00:00")
    if isinstance(value, date | time):
        return value.isoformat()
    return str(value)


def read_xlsx(body: bytes) -> Iterator[SheetRow]:
    check_zip(body)
    from openpyxl import load_workbook  # imported on use: most processes never read a spreadsheet

    try:
        book = load_workbook(io.BytesIO(body), read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 - openpyxl raises many kinds for a malformed file
        raise refuse(422, "import_bad_xlsx", "Excel 文件已损坏或不是 .xlsx 格式") from exc
    try:
        sheet = book.worksheets[0] if book.worksheets else None
        if sheet is None:
            raise refuse(422, "import_empty", "Excel 文件中没有工作表")
        try:
            # Some programs write a wrong <dimension>, which would cut the read short: read every row.
            # Read-only sheets yield rows from row 1, missing (empty) rows included, so rows are counted.
            sheet.reset_dimensions()
            for number, values in enumerate(sheet.iter_rows(max_col=MAX_COLUMNS, values_only=True), start=1):
                yield SheetRow(number, [cell_text(v) for v in values])
        except ApiError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise refuse(422, "import_bad_xlsx", "Excel 文件已损坏，无法读取其中的单元格") from exc
    finally:
        book.close()
