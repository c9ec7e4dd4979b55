"""The pools in the console: a salesperson on a phone switches pools, sees masked phones, embargoed leads
counting down and today's claims left; a manager runs 线索池管理 (create, members, edit, delete). SQLite only,
like the other browser tests (tests/pools covers both databases)."""

from __future__ import annotations

import re

import pytest
from support import Api
from support.browser import DESKTOP, PHONE, Consoles  # the `browser` and `consoles` fixtures: a plugin (conftest)

SQLITE_ONLY = pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
WIDTH = PHONE["width"]


def ok(r, status: int = 200) -> dict:
    assert r.status_code == status, r.text
    return r.json()["data"]


def pooled(api: Api, team, name: str, phone: str) -> dict:
    lead = api.lead(team.admin, name=name, phone=phone, assignedTo=team.manager.id)
    return ok(api.client(team.manager).post(f"/api/customers/{lead['id']}/release", json={}))


@SQLITE_ONLY
def test_at_375px_a_salesperson_switches_pools_sees_masked_phones_the_embargo_and_claims_left(
    api, team, consoles: Consoles
):
    pool = ok(
        api.client(team.admin).post(
            "/api/pools",
            json={"name": "A组线索池", "team": "A", "claimDailyLimit": 2, "embargoMinutes": 30, "hidePhone": True},
        ),
        201,
    )
    pooled(api, team, "黄蓉", "13812345678")
    api.ctx.clock.advance(minutes=31)
    pooled(api, team, "郭靖", "13900001111")  # just pooled: 30 minutes to go
    api.lead(team.admin, name="公海客户", phone="13700002222")

    alice = consoles.new(api.url, viewport=PHONE)
    page = alice.sign_in(team.alice.token, "/console/pool")
    alice.ready()

    switcher = page.get_by_label("线索池", exact=True)
    assert switcher.locator("option").all_inner_texts() == ["全部线索池", "公司公海", "A组线索池"]
    rules = page.locator("#pool-rules")
    assert "A组线索池，今日还可领取 2 条（上限 2）" in rules.inner_text()
    row = page.locator("#leads tbody tr", has_text="黄蓉")
    assert row.locator("td.phone").inner_text().endswith("138****5678")
    assert "13812345678" not in page.content()
    waiting = page.get_by_role("button", name="领取线索：郭靖")
    assert waiting.is_disabled() and re.fullmatch(r"(30|29) 分钟后可领取", waiting.inner_text())
    assert page.evaluate("document.scrollingElement.scrollWidth") <= WIDTH

    page.get_by_role("button", name="领取线索：黄蓉").click()
    page.get_by_role("status").filter(has_text="领取成功：黄蓉").wait_for()
    page.locator("#pool-rules", has_text="今日还可领取 1 条").wait_for()

    switcher.select_option(label="公司公海")
    page.locator("#leads tbody tr", has_text="郭靖").wait_for(state="detached")
    assert page.locator("#leads tbody tr").all_inner_texts()[0].startswith("公海客户")
    assert "poolId=company" in page.url
    switcher.select_option(label="A组线索池")
    page.locator("#leads tbody tr", has_text="郭靖").wait_for()
    assert f"poolId={pool['id']}" in page.url
    assert page.evaluate("document.scrollingElement.scrollWidth") <= WIDTH
    alice.screenshot("pools-phone")


@SQLITE_ONLY
def test_a_manager_creates_a_pool_adds_a_pool_admin_edits_and_deletes_it(api, team, consoles: Consoles):
    pooled(api, team, "黄蓉", "13812345678")  # in the company pool: team A has no pool yet
    manager = consoles.new(api.url, viewport=DESKTOP)
    page = manager.sign_in(team.manager.token, "/console/pools")
    manager.ready()
    assert page.get_by_role("link", name="线索池管理").is_visible()
    assert page.locator("#pools tbody").inner_text().strip() == "还没有线索池。"

    page.get_by_label("名称").fill("A组线索池")
    page.get_by_label("新入池保护期（分钟）").fill("10")
    page.get_by_label("领取前隐藏电话").check()
    page.get_by_role("button", name="创建线索池").click()
    page.get_by_role("status").filter(has_text="线索池「A组线索池」已创建").wait_for()
    row = page.locator("#pools tbody tr", has_text="A组线索池")
    row.wait_for()  # the table is drawn again after the message
    assert row.locator("td").all_inner_texts()[:6] == ["A组线索池", "A", "部署设置", "部署设置", "10 分钟", "是"]

    page.get_by_role("button", name="管理成员：A组线索池").click()
    page.get_by_label("用户").select_option(label="赵强（销售 · A 组）")
    page.get_by_label("角色").select_option("admin")
    page.get_by_role("button", name="添加成员").click()
    page.locator("#member-table tbody tr", has_text="赵强").wait_for()
    assert page.locator("#member-table tbody tr", has_text="赵强").locator("td").nth(2).inner_text() == "线索池管理员"
    pools = ok(api.client(team.bob).get("/api/pools"))
    assert [(p["name"], p["myRole"], p["canHandOut"]) for p in pools if not p["company"]] == [
        ("A组线索池", "admin", True)
    ]

    page.get_by_role("button", name="编辑线索池：A组线索池").click()
    page.get_by_label("名称").fill("A组公海")
    page.get_by_role("button", name="保存").click()
    page.get_by_role("status").filter(has_text="线索池已保存").wait_for()
    page.locator("#pools tbody tr", has_text="A组公海").wait_for()

    # A lead released by a team A member now lands in it; deleting the pool sends it to the company pool.
    lead = pooled(api, team, "郭靖", "13900001111")
    assert lead["poolName"] == "A组公海" and lead["phone"] == "139****1111"
    delete = page.get_by_role("button", name="删除线索池：A组公海")
    delete.click()
    delete.click()
    page.get_by_role("status").filter(has_text="1 条线索已移入公司公海").wait_for()
    page.locator("#pools tbody tr.empty-row", has_text="还没有线索池。").wait_for()
    assert ok(api.client(team.alice).get(f"/api/customers/{lead['id']}"))["poolName"] == "公司公海"


@SQLITE_ONLY
def test_salespeople_have_no_pool_management(api, team, consoles: Consoles):
    alice = consoles.new(api.url, viewport=PHONE)
    page = alice.sign_in(team.alice.token, "/console/pools")
    page.get_by_role("status").filter(has_text="您的角色无权使用此页面").wait_for()
    assert not page.get_by_role("link", name="线索池管理").is_visible()


@SQLITE_ONLY
def test_a_salesperson_who_is_a_pools_admin_hands_its_leads_out_from_the_pool_page(api, team, consoles: Consoles):
    pool = ok(api.client(team.admin).post("/api/pools", json={"name": "A组线索池", "team": "A"}), 201)
    ok(api.client(team.admin).post(f"/api/pools/{pool['id']}/members", json={"userId": team.carol.id, "role": "admin"}))
    lead = pooled(api, team, "黄蓉", "13812345678")
    api.lead(team.admin, name="公海客户", phone="13700002222")

    carol = consoles.new(api.url, viewport=DESKTOP)
    page = carol.sign_in(team.carol.token, "/console/pool")
    carol.ready()
    # Her pool's lead can be selected, the company pool's cannot (she hands out only her pool's).
    assert page.get_by_role("checkbox", name=re.compile("黄蓉")).count() == 1
    assert page.get_by_role("checkbox", name=re.compile("公海客户")).count() == 0
    assert page.get_by_label("分配给").locator("option").all_inner_texts()[1:] == [
        "王经理（经理 · A 组）",
        "李丽（销售 · A 组）",
        "赵强（销售 · A 组）",
        "孙娜（销售 · B 组）",
    ]
    page.get_by_role("checkbox", name=re.compile("黄蓉")).check()
    page.get_by_label("分配给").select_option(label="李丽（销售 · A 组）")
    page.get_by_role("button", name="分配所选").click()
    page.get_by_role("status").filter(has_text="已分配 1 条").wait_for()
    assert ok(api.client(team.alice).get(f"/api/customers/{lead['id']}"))["ownerId"] == team.alice.id
