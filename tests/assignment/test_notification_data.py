"""`notificationData` tells an old front end the truth: the page WeChat opens, and whether the server sends it.

Here the deployment has WeChat and WeCom configured (an api-only process, so the deliveries stay planned and
nothing is sent anywhere); test_assignment covers a deployment with neither.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import DATABASES, running_stack
from support.api import ok
from support.leads import assign

DIGEST_PAGE = "pages/inbox/index"


@pytest.fixture(scope="module", params=DATABASES)
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    with running_stack(
        request.param,
        str(tmp_path_factory.mktemp(f"nd-{request.param}")),
        roles=frozenset({"api"}),
        wechat_appid="wx-test",
        wechat_secret="wx-secret",
        wechat_template_id="tpl-1",
        wechat_digest_page=DIGEST_PAGE,
        wecom_corpid="corp",
        wecom_secret="corp-secret",
        wecom_agentid=1000002,
    ) as started:
        yield started


def test_a_digest_names_the_page_wechat_is_sent_and_a_single_lead_its_own_page(api, team):
    leads = [api.lead(team.manager, phone=f"1380000000{i}") for i in range(3)]
    (digest,) = ok(assign(api, team.manager, "batch", [lead["id"] for lead in leads], team.alice))["notificationData"]
    assert digest["type"] == "customers_assigned" and digest["page"] == DIGEST_PAGE

    single = ok(assign(api, team.manager, "web", api.lead(team.manager)["id"], team.alice))["notificationData"]
    assert single["type"] == "customer_assigned" and single["page"].startswith("pages/customer/detail?id=")


def test_sent_by_server_is_true_only_for_someone_the_server_will_push_to(api, team):
    with_openid = ok(assign(api, team.manager, "web", api.lead(team.manager)["id"], team.alice))
    assert with_openid["notificationData"]["sentByServer"] is True

    wecom_only = api.user("周敏", "sales", "A", wecom_userid="zhoumin")
    on_wecom = ok(assign(api, team.manager, "web", api.lead(team.manager)["id"], wecom_only))
    assert on_wecom["notificationData"]["sentByServer"] is True

    # Bob has neither an openid nor a WeCom id: nobody sends him a push, the page may.
    no_address = ok(assign(api, team.manager, "web", api.lead(team.manager)["id"], team.bob))
    assert no_address["notificationData"]["sentByServer"] is False
