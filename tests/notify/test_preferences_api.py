"""Notification preferences over the API: what a person sees and may change, who may change whose, what a
team's default is, and what a choice does to the deliveries a notice is planned with."""

from __future__ import annotations

from sqlalchemy import select
from support import Api, ok, refused
from support.leads import at_once

from leadpush.notify.models import Delivery, Notification

URL = "/api/me/notification-preferences"


def by_category(prefs: dict) -> dict[str, dict]:
    return {c["category"]: c for c in prefs["categories"]}


def team_id(api: Api, who, name: str) -> int:
    [team] = [t for t in ok(api.client(who).get("/api/teams")) if t["name"] == name]
    return team["id"]


def assign(api: Api, team, to) -> dict:
    lead = api.lead(team.manager)
    return ok(api.client(team.manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": to.id}))


def planned(api: Api, who, kind: str) -> dict[str, tuple[str, str | None]]:
    """The delivery rows of `who`'s latest notice of `kind`: channel -> (status, why)."""
    with api.ctx.db.read() as session:
        note = session.scalars(
            select(Notification)
            .where(Notification.recipient_id == who.id, Notification.kind == kind)
            .order_by(Notification.id.desc())
        ).first()
        assert note is not None
        rows = session.scalars(select(Delivery).where(Delivery.notification_id == note.id))
        return {d.channel: (d.status, d.policy) for d in rows}


def test_a_person_sees_every_category_with_the_default_and_their_bound_channels(api, team):
    prefs = ok(api.client(team.alice).get(URL))
    assert [c["category"] for c in prefs["categories"]] == [
        "new_leads",
        "first_contact",
        "follow_up",
        "transfer_warning",
        "lead_updates",
        "taken_back",
    ]
    cats = by_category(prefs)
    assert cats["new_leads"]["name"] == "新线索"
    assert cats["new_leads"]["chosenChannels"] is None
    assert cats["new_leads"]["effectiveChannels"] == ["wechat", "wecom"]  # "wechat|wecom"
    assert cats["transfer_warning"]["effectiveChannels"] == ["wecom"]  # "*": WeCom only
    assert cats["transfer_warning"]["allowedChannels"] == ["wechat", "wecom"]
    assert prefs["quietMode"] == "team" and prefs["urgentOverride"] is True
    assert prefs["teamDefault"]["teamName"] == "A" and prefs["teamDefault"]["quietMode"] == "none"
    assert {c["channel"]: c["bound"] for c in prefs["channels"]} == {"wechat": True, "wecom": True}
    bob = ok(api.client(team.bob).get(URL))
    assert {c["channel"]: c["bound"] for c in bob["channels"]} == {"wechat": False, "wecom": False}
    assert {c["channel"]: c["name"] for c in bob["channels"]} == {"wechat": "微信小程序", "wecom": "企业微信"}


def test_choosing_channels_per_category_and_going_back_to_the_default(api, team):
    c = api.client(team.alice)
    prefs = ok(c.put(URL, json={"channels": {"new_leads": ["wecom"], "transfer_warning": ["wechat", "wecom"]}}))
    cats = by_category(prefs)
    assert cats["new_leads"]["chosenChannels"] == ["wecom"]
    assert cats["new_leads"]["effectiveChannels"] == ["wecom"]
    assert cats["transfer_warning"]["effectiveChannels"] == ["wechat", "wecom"]
    assert cats["taken_back"]["chosenChannels"] is None
    # Only what is named changes; null is "恢复默认".
    prefs = ok(c.put(URL, json={"channels": {"new_leads": None}}))
    cats = by_category(prefs)
    assert cats["new_leads"]["chosenChannels"] is None and cats["new_leads"]["effectiveChannels"] == ["wechat", "wecom"]
    assert cats["transfer_warning"]["chosenChannels"] == ["wechat", "wecom"]
    # In-app only for lead updates: an empty list.
    prefs = ok(c.put(URL, json={"channels": {"lead_updates": []}}))
    assert by_category(prefs)["lead_updates"]["effectiveChannels"] == []
    assert by_category(ok(c.get(URL)))["lead_updates"]["chosenChannels"] == []


def test_quiet_hours_and_urgent_override(api, team):
    c = api.client(team.alice)
    prefs = ok(c.put(URL, json={"quietMode": "custom", "quietStart": "22:00", "quietEnd": "08:00"}))
    assert (prefs["quietMode"], prefs["quietStart"], prefs["quietEnd"]) == ("custom", "22:00", "08:00")
    prefs = ok(c.put(URL, json={"urgentOverride": False}))
    assert prefs["urgentOverride"] is False and prefs["quietMode"] == "custom"  # the rest kept
    prefs = ok(c.put(URL, json={"quietMode": "working_hours"}))
    assert prefs["quietMode"] == "working_hours"
    prefs = ok(c.put(URL, json={"quietMode": "none"}))
    assert prefs["quietMode"] == "none"


def test_bad_settings_are_refused_with_a_reason(api, team, monkeypatch):
    c = api.client(team.alice)
    refused(c.put(URL, json={"channels": {"sms_blast": ["wechat"]}}), 422, "validation_error")
    refused(c.put(URL, json={"channels": {"new_leads": ["sms"]}}), 422, "validation_error")
    refused(c.put(URL, json={"channels": {"new_leads": ["inapp"]}}), 422, "validation_error")
    refused(c.put(URL, json={"quietMode": "sometimes"}), 422, "validation_error")
    refused(c.put(URL, json={"quietMode": "custom"}), 422, "quiet_hours_incomplete")
    refused(c.put(URL, json={"quietMode": "custom", "quietStart": "22:00"}), 422, "quiet_hours_incomplete")
    refused(c.put(URL, json={"quietMode": "custom", "quietStart": "25:00", "quietEnd": "08:00"}), 422, "invalid_time")
    refused(c.put(URL, json={"quietMode": "custom", "quietStart": "8:00", "quietEnd": "09:00"}), 422, "invalid_time")
    refused(
        c.put(URL, json={"quietMode": "custom", "quietStart": "08:00", "quietEnd": "08:00"}), 422, "quiet_hours_empty"
    )
    refused(c.put(URL, json={"urgent": True}), 422, "validation_error")
    # What the admin lets people choose (LEADPUSH_PREFERENCE_CHANNELS): WeCom only for new leads.
    monkeypatch.setattr(api.ctx.settings, "preference_channels", {"new_leads": ["wecom"]})
    body = refused(c.put(URL, json={"channels": {"new_leads": ["wechat", "wecom"]}}), 422, "channel_not_allowed")
    assert "新线索" in body["message"] and "微信小程序" in body["message"]
    cats = by_category(ok(c.get(URL)))
    assert cats["new_leads"]["allowedChannels"] == ["wecom"]
    assert cats["follow_up"]["allowedChannels"] == ["wechat", "wecom"]
    # Turning WeCom off is theirs; WeChat is not, so it stays as the policy has it.
    cats = by_category(ok(c.put(URL, json={"channels": {"new_leads": []}})))
    assert cats["new_leads"]["effectiveChannels"] == ["wechat"]
    # Nothing was stored by the refused requests.
    assert ok(c.get(URL))["quietMode"] == "team"


def test_admins_change_anyones_managers_their_teams_and_sales_only_their_own(api, team):
    url = f"/api/users/{team.alice.id}/notification-preferences"
    body = {"channels": {"taken_back": ["wechat"]}}
    prefs = ok(api.client(team.manager).put(url, json=body))
    assert prefs["userId"] == team.alice.id and by_category(prefs)["taken_back"]["chosenChannels"] == ["wechat"]
    assert by_category(ok(api.client(team.alice).get(URL)))["taken_back"]["chosenChannels"] == ["wechat"]
    ok(api.client(team.admin).put(url, json={"quietMode": "none"}))
    refused(api.client(team.manager_b).get(url), 403, "forbidden")
    refused(api.client(team.manager_b).put(url, json=body), 403, "forbidden")
    refused(api.client(team.bob).put(url, json=body), 403, "forbidden")
    refused(api.client(team.admin).get("/api/users/999999/notification-preferences"), 404, "user_not_found")
    ok(api.client(team.bob).get(f"/api/users/{team.bob.id}/notification-preferences"))


def test_team_default_quiet_hours(api, team):
    a, b = team_id(api, team.admin, "A"), team_id(api, team.admin, "B")
    url = f"/api/teams/{a}/notification-defaults"
    assert ok(api.client(team.manager).get(url))["quietMode"] == "none"
    out = ok(
        api.client(team.manager).put(url, json={"quietMode": "custom", "quietStart": "21:30", "quietEnd": "07:30"})
    )
    assert (out["teamName"], out["quietMode"], out["quietStart"], out["quietEnd"]) == ("A", "custom", "21:30", "07:30")
    # A member who follows the team sees it with their own settings.
    assert ok(api.client(team.alice).get(URL))["teamDefault"]["quietStart"] == "21:30"
    refused(api.client(team.manager).put(url, json={"quietMode": "team"}), 422, "validation_error")
    refused(
        api.client(team.manager).put(url, json={"quietStart": "21:30", "quietEnd": "21:30"}), 422, "quiet_hours_empty"
    )
    refused(api.client(team.manager).put(f"/api/teams/{b}/notification-defaults", json={}), 403, "forbidden")
    refused(api.client(team.alice).get(url), 403, "forbidden")
    refused(api.client(team.admin).get("/api/teams/999999/notification-defaults"), 404, "team_not_found")
    assert ok(api.client(team.admin).put(url, json={"quietMode": "working_hours"}))["quietMode"] == "working_hours"


def test_a_channel_turned_off_is_recorded_as_skipped_with_the_reason(api, team):
    # Neither push channel is configured here: without a choice, the rows say so.
    assign(api, team, team.alice)
    rows = planned(api, team.alice, "customer_assigned")
    assert rows["wechat"] == ("skipped", "未配置微信小程序渠道")
    ok(api.client(team.alice).put(URL, json={"channels": {"new_leads": ["wecom"]}}))
    assign(api, team, team.alice)
    rows = planned(api, team.alice, "customer_assigned")
    assert rows["wechat"] == ("skipped", "用户已关闭微信小程序的「新线索」通知")
    assert rows["wecom"] == ("skipped", "未配置企业微信渠道")
    assert rows["inapp"][0] != "skipped"


def test_first_saves_at_once_all_succeed(api, team):
    """Several first saves of one person's settings at once (two tabs, a retry): each answers, none is a 500."""
    clients = [api.client(team.alice) for _ in range(6)]
    bodies = [{"channels": {"taken_back": ["wecom"]}}, {"quietMode": "none"}, {"urgentOverride": False}] * 2
    answers = at_once([lambda c=c, b=b: c.put(URL, json=b) for c, b in zip(clients, bodies, strict=True)])
    assert [r.status_code for r in answers] == [200] * 6
    a = team_id(api, team.admin, "A")
    managers = [api.client(team.manager) for _ in range(4)]
    url = f"/api/teams/{a}/notification-defaults"
    answers = at_once([lambda c=c: c.put(url, json={"quietMode": "working_hours"}) for c in managers])
    assert [r.status_code for r in answers] == [200] * 4
