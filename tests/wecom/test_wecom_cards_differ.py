"""WeCom's duplicate check must hide only a re-send of the same notice, never a second notice that reads the
same: the same lead assigned to the same person twice within the check's interval (taken away and given back
in the same minute) is two notices, and the member sees two cards."""

from __future__ import annotations

import pytest
from support import Api
from support.api import ok
from support.channels import FakeWeChatServer
from support.waiting import wait_for


@pytest.fixture
def people(pushing: Api):
    class People:
        manager = pushing.user("王经理", "manager", "A")
        alice = pushing.user("李丽", "sales", "A", wecom_userid="alice")
        bob = pushing.user("赵强", "sales", "A", wecom_userid="bob")

    return People


def test_a_lead_given_back_to_its_owner_within_the_interval_is_a_second_card(
    pushing: Api, fake: FakeWeChatServer, people
) -> None:
    api = pushing
    lead = api.lead(people.manager, name="张三", assignedTo=people.alice.id)
    assign = f"/api/customers/{lead['id']}/assign"
    ok(api.client(people.manager).patch(assign, json={"assignedTo": people.bob.id}))
    ok(api.client(people.manager).patch(assign, json={"assignedTo": people.alice.id}))

    def to_alice() -> list[dict]:
        return [m for m in fake.state.get_messages("wecom") if "alice" in m["touser"] and "新线索" in str(m["body"])]

    # Her two assignments (and the "taken back" notice between them) reach her; none is hidden as a repeat.
    wait_for(lambda: len(to_alice()) == 2)
    first, second = to_alice()
    assert first["body"]["enable_duplicate_check"] == 1
    assert first["body"]["textcard"]["description"] == second["body"]["textcard"]["description"]
    assert first["body"]["textcard"]["url"] != second["body"]["textcard"]["url"]
    assert fake.state.get_wecom_duplicates() == []
