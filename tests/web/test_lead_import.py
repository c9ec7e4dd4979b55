"""Creating a lead from the leads page, and importing a spreadsheet of them, in a real browser.

At a desktop width and on a 375 px phone: the form shows its errors next to the fields and the new lead
in the list; the import page previews an .xlsx with the bad row's reason, imports the good rows, and
they are in the list. SQLite only, like the other console tests (the API suite covers PostgreSQL).
"""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from openpyxl import Workbook
from support import Api
from support.browser import DESKTOP, PHONE, Consoles
from support.leads import notes

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("stack", ["sqlite"], indirect=True)]
VIEWPORTS = pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
MONDAY_MORNING = datetime(2026, 3, 2, 1, 5, tzinfo=UTC)  # 09:05 in Shanghai
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@pytest.fixture
def crm(api: Api) -> Api:
    api.ctx.clock.set(MONDAY_MORNING)
    return api


def suffix(viewport: dict[str, int]) -> str:
    return "-phone" if viewport == PHONE else ""


def no_horizontal_overflow(page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"page is {width}px wide at {page.viewport_size['width']}px"


def fair_workbook() -> bytes:
    book = Workbook()
    sheet = book.active
    sheet.title = "展会线索"
    for row in [
        ["姓名", "手机号", "来源", "负责人", "公司"],
        ["周杰", 13800138000, "春季展会", "赵强", "杰伦科技"],
        ["吴敏", "13900139000", "春季展会", "李丽", "敏捷贸易"],
        ["郑浩", "1390000abc", "春季展会", "", "浩然物流"],  # not a phone
        ["冯雪", "13600136000", "春季展会", "", ""],
    ]:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


@VIEWPORTS
def test_a_manager_creates_a_lead_from_the_form_and_sees_it_in_the_list(crm, team, consoles: Consoles, viewport):
    crm.lead(team.manager, name="老客户", phone="13100000001")
    me = consoles.new(crm.url, viewport=viewport)
    page = me.sign_in(team.manager.token, "/console/customers")
    me.ready()
    page.get_by_role("button", name="新建线索").click()
    form = page.locator("#create-form")
    # Nothing filled in: each required field says so, next to itself.
    form.get_by_role("button", name="创建").click()
    assert page.locator("#c-name-error").inner_text() == "请填写姓名"
    assert page.locator("#c-phone-error").inner_text() == "请填写电话"
    assert page.get_by_label("姓名").get_attribute("aria-invalid") == "true"

    form.get_by_label("姓名").fill("周杰")
    form.get_by_label("电话").fill("138-abc")
    form.get_by_label("来源").fill("官网表单")
    form.get_by_label("负责人").select_option(str(team.alice.id))
    form.get_by_role("button", name="创建").click()
    page.locator("#c-phone-error", has_text="电话号码格式不正确").wait_for()  # the server's check, inline
    assert page.locator("#c-name-error").is_hidden()

    form.get_by_label("电话").fill("138 0013 8000")
    form.get_by_role("button", name="创建").click()
    page.locator("#create-status", has_text="已创建线索：周杰（李丽）").wait_for()
    row = page.locator("#leads tbody tr.just-added")
    row.wait_for()
    assert "周杰" in row.inner_text() and "13800138000" in row.inner_text() and "李丽" in row.inner_text()
    assert page.locator("#leads tbody tr").first.get_attribute("class") == "just-added"  # newest first
    assert page.locator("#c-phone-error").is_hidden() and form.get_by_label("姓名").input_value() == ""
    assert [n.recipient_id for n in notes(crm)] == [team.alice.id]  # assigned at creation: she is told
    if viewport == PHONE:
        no_horizontal_overflow(page)
    me.screenshot("lead-create" + suffix(viewport))


@VIEWPORTS
def test_a_salesperson_creates_a_lead_for_themselves(crm, team, consoles: Consoles, viewport):
    me = consoles.new(crm.url, viewport=viewport)
    page = me.sign_in(team.alice.token, "/console/customers")
    me.ready()
    assert page.get_by_role("link", name="批量导入").is_hidden()  # importing is for admins and managers
    page.get_by_role("button", name="新建线索").click()
    assert page.locator("#create-form").get_by_label("负责人").is_hidden()
    page.get_by_label("姓名").fill("吴敏")
    page.get_by_label("电话").fill("13900139000")
    page.get_by_role("button", name="创建").click()
    page.locator("#leads tbody tr.just-added", has_text="吴敏").wait_for()
    assert "李丽" in page.locator("#leads tbody tr.just-added").inner_text()
    if viewport == PHONE:
        no_horizontal_overflow(page)


@VIEWPORTS
def test_a_manager_imports_an_xlsx_sees_the_bad_row_and_imports_the_good_ones(crm, team, consoles: Consoles, viewport):
    me = consoles.new(crm.url, viewport=viewport)
    page = me.sign_in(team.manager.token, "/console/customers")
    me.ready()
    page.get_by_role("link", name="批量导入").click()
    page.wait_for_url("**/console/customers/import")
    me.ready()
    template = page.get_by_role("link", name="下载导入模板")
    assert template.get_attribute("href") == "/console/customers/import/template.csv"

    page.get_by_label("选择文件（CSV 或 .xlsx）").set_input_files(
        files=[{"name": "春季展会.xlsx", "mimeType": XLSX, "buffer": fair_workbook()}]
    )
    preview = page.locator("#preview")
    preview.locator("tbody tr").first.wait_for()
    assert page.locator("#counts").inner_text().startswith("可导入 3 条 / 有错误 1 条")
    assert page.locator("#ignored").inner_text() == "已忽略的列：公司"
    bad = preview.locator("tbody tr.bad")
    assert bad.count() == 1
    assert bad.locator("th").inner_text() == "4"  # the row number Excel shows
    assert "电话号码格式不正确" in bad.inner_text() and "有错误" in bad.inner_text()
    good = preview.locator("tbody tr[data-row='2']")
    assert "赵强" in good.inner_text() and "可导入" in good.inner_text()
    if viewport == PHONE:
        no_horizontal_overflow(page)  # the preview scrolls inside its own box
    me.screenshot("lead-import-preview" + suffix(viewport))

    page.get_by_role("button", name="导入 3 条").click()
    summary = page.locator("#summary")
    summary.wait_for()
    assert summary.inner_text() == "已导入 3 条线索，跳过 1 行有错误的数据（第 4 行）。"
    if viewport == PHONE:
        no_horizontal_overflow(page)
    me.screenshot("lead-import-done" + suffix(viewport))

    page.get_by_role("link", name="返回线索列表").first.click()
    page.wait_for_url("**/console/customers")
    me.ready()
    names = page.locator("#leads tbody tr td:nth-child(2)").all_inner_texts()
    assert sorted(names) == ["冯雪", "吴敏", "周杰"]
    owners = {
        r.locator("td:nth-child(2)").inner_text(): r.locator("td.owner").inner_text()
        for r in page.locator("#leads tbody tr").all()
    }
    assert owners == {"周杰": "赵强", "吴敏": "李丽", "冯雪": "公海"}


def test_cells_pasted_from_excel_are_previewed_at_once(crm, team, consoles: Consoles):
    me = consoles.new(crm.url, viewport=PHONE)
    page = me.sign_in(team.manager.token, "/console/customers/import")
    me.ready()
    cells = "姓名\t电话\t来源\r\n周杰\t13800138000\t转介绍\r\n\t13900139000\t转介绍\r\n"
    box = page.get_by_label("或者：粘贴从 Excel 复制的单元格（连同表头行）")
    box.fill(cells)
    page.get_by_role("button", name="预览粘贴的内容").click()
    page.locator("#preview tbody tr.bad", has_text="客户姓名不能为空").wait_for()
    assert page.locator("#counts").inner_text().startswith("可导入 1 条 / 有错误 1 条")
    page.get_by_label("只看有问题的行").check()
    assert page.locator("#preview tbody tr:visible").count() == 1
    no_horizontal_overflow(page)


def test_a_file_that_is_not_a_sheet_is_refused_with_a_reason_on_the_page(crm, team, consoles: Consoles):
    me = consoles.new(crm.url)
    page = me.sign_in(team.manager.token, "/console/customers/import")
    me.ready()
    page.get_by_label("选择文件（CSV 或 .xlsx）").set_input_files(
        files=[
            {
                "name": "旧表格.xls",
                "mimeType": "application/vnd.ms-excel",
                "buffer": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 512,
            }
        ]
    )
    page.locator("#page-status.error", has_text="不支持旧版 Excel（.xls）文件").wait_for()
    assert page.locator("#preview-card").is_hidden()
