"""The lead sources page (线索来源) in a real browser: an admin sets up a source for a landing page's form,
copies its token once, and a lead sent with it arrives; they edit, rotate, disable and delete it.

Against a real server on SQLite (the API behind the page is tested on both databases in tests/intake).
"""

from __future__ import annotations

from typing import Any

import pytest
from support import Api, ok, refused
from support.browser import Consoles  # the `browser` and `consoles` fixtures: a plugin (conftest)

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("stack", ["sqlite"], indirect=True)]


def source_row(page: Any, name: str) -> Any:
    return page.locator("#sources tbody tr", has=page.get_by_text(name, exact=True))


def cell(row: Any, label: str) -> str:
    return row.locator(f"td[data-label='{label}']").inner_text().strip()


def shown_token(page: Any, previous: str = "") -> str:
    page.wait_for_function(
        "prev => { const t = document.getElementById('secret-token').value; return t && t !== prev; }", arg=previous
    )
    return page.locator("#secret-token").input_value()


def send(api: Api, token: str, body: dict) -> Any:
    return api.client(token).post("/api/leads/inbound", json=body)


def test_an_admin_creates_a_source_sees_its_token_once_and_a_lead_sent_with_it_arrives(api, team, consoles: Consoles):
    admin = consoles.new(api.url)
    page = admin.sign_in(team.admin.token, "/console/sources")
    admin.ready()
    assert page.get_by_role("link", name="线索来源").get_attribute("aria-current") == "page"
    page.get_by_text("还没有线索来源").wait_for()

    page.get_by_text("新建来源", exact=True).click()
    form = page.locator("#create-form")
    form.get_by_label("名称").fill("抖音落地页")
    form.get_by_label("来源标识").fill("抖音表单")
    form.get_by_label("电话重复时").select_option("flag")
    form.get_by_label("默认地区").fill("上海")
    form.get_by_label("字段映射").fill("contact.mobile = phone\nfull_name = name")
    page.get_by_role("button", name="创建来源").click()

    token = shown_token(page)
    assert token.startswith("lpi_")
    secret = page.locator("#secret-signing").input_value()
    assert secret.startswith("lpsig_")
    curl = page.locator("#secret-curl").input_value()
    assert token in curl and "/api/leads/inbound" in curl
    assert page.locator("#secret-form-url").input_value().endswith("/form")
    row = source_row(page, "抖音落地页")
    assert cell(row, "来源标识") == "抖音表单" and cell(row, "电话重复时") == "新建并标记疑似重复"
    assert "contact.mobile → phone" in cell(row, "字段映射") and cell(row, "令牌") == token[:8] + "…"

    # The token works for the inbound endpoint, with the mapping the admin typed.
    item = ok(send(api, token, {"contact": {"mobile": "13800138000"}, "full_name": "张三"}), 201)
    lead = ok(api.client(team.admin).get(f"/api/customers/{item['customerId']}"))
    assert (lead["name"], lead["source"], lead["region"]) == ("张三", "抖音表单", "上海")

    # Closed, the token is gone from the page; a reload does not bring it back.
    page.get_by_role("button", name="我已保存，关闭").click()
    assert page.locator("#secrets-box").is_hidden()
    page.reload()
    admin.ready()
    source_row(page, "抖音落地页").wait_for()
    admin.screenshot("sources")
    assert token not in page.content() and secret not in page.content()

    # Edit: merge duplicates from now on.
    source_row(page, "抖音落地页").get_by_role("button", name="编辑").click()
    editor = page.locator("#edit-form")
    editor.get_by_label("电话重复时").select_option("merge")
    page.get_by_role("button", name="保存修改").click()
    page.get_by_role("status").filter(has_text="线索来源已保存").wait_for()
    assert cell(source_row(page, "抖音落地页"), "电话重复时") == "合并到已有线索并通知负责人"

    # Rotate (asks once more): a new token is shown once, the old one stops working.
    rotate = source_row(page, "抖音落地页").get_by_role("button", name="轮换令牌：抖音落地页")
    rotate.click()
    rotate.click()
    new = shown_token(page, previous="")
    assert new != token and new.startswith("lpi_")
    refused(send(api, token, {"phone": "13800138001"}), 401, "invalid_intake_token")

    # Disable, then delete.
    source_row(page, "抖音落地页").get_by_role("button", name="停用来源：抖音落地页").click()
    page.get_by_role("status").filter(has_text="线索来源已保存").wait_for()
    source_row(page, "抖音落地页").get_by_text("已停用").wait_for()
    refused(send(api, new, {"phone": "13800138001"}), 403, "source_disabled")
    remove = source_row(page, "抖音落地页").get_by_role("button", name="删除来源：抖音落地页")
    remove.click()
    remove.click()
    page.get_by_text("还没有线索来源").wait_for()


def test_a_manager_does_not_get_the_page(api, team, consoles: Consoles):
    manager = consoles.new(api.url)
    page = manager.sign_in(team.manager.token, "/console/sources")
    page.get_by_text("您的角色无权使用此页面。").wait_for()
    assert page.get_by_role("link", name="线索来源").is_hidden()
