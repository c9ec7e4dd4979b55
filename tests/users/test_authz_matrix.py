"""The authorization matrix: every endpoint (and the WebSocket) × every kind of caller → the status.

One table, one parametrised test. Callers: anonymous, a bad token, the sales owner of the lead, a
salesperson of the same team, a salesperson of another team, the team's manager, another team's
manager, and an admin. Leads a caller may not see answer 404 (their existence is not revealed).
Permissions do not depend on the database, so the matrix runs on SQLite; every endpoint's behaviour
is also covered on PostgreSQL by the feature tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from leadpush.notify.models import Delivery
from leadpush.users.models import ApiToken

pytestmark = pytest.mark.slow  # exhaustive: every route and socket for every kind of caller (840 tests)

CALLERS = ["anonymous", "bad_token", "owner", "same_team", "other_team", "manager", "other_manager", "admin"]


@dataclass
class World:
    api: Any
    tokens: dict[str, str | None]
    ids: dict[str, Any]


_shared: dict[str, World] = {}


def changes_nothing(endpoint: str | None, caller: str | None) -> bool:
    """A GET, or a call the matrix expects refused (4xx): it leaves the world as it found it. A refused call that
    wrote something anyway would be a defect the next tests on the shared world would trip over too."""
    if endpoint is None or caller is None:
        return False
    method, _path, _body, statuses = MATRIX[endpoint]
    return method == "GET" or statuses[CALLERS.index(caller)] >= 400


@pytest.fixture
def world(stack, request) -> World:
    """A fresh world for each call that may change it; the calls that change nothing (GETs and the calls refused)
    share one, built again after any call that changed it (building one is ~20 requests: most of the matrix's
    time when every write call had its own)."""
    from support import Api, FakeClock, wipe
    from support.databases import reset_limits

    ctx, server = stack
    params = request.node.callspec.params
    keeps = changes_nothing(params.get("endpoint"), params.get("caller"))
    if keeps and _shared.get("world") is not None and _shared["world"].api.ctx is ctx:
        reset_limits(ctx)  # what `wipe` resets besides the tables
        return _shared["world"]
    ctx.clock = FakeClock()
    wipe(ctx)
    api = Api(url=server.url, ctx=ctx)
    request.addfinalizer(api.close)
    built = build_world(api)
    _shared["world"] = built if keeps else None
    return built


def build_world(api) -> World:
    admin = api.user("管理员", "admin", None)
    manager = api.user("王经理", "manager", "A")
    owner = api.user("李丽", "sales", "A")
    same = api.user("赵强", "sales", "A")
    target = api.user("周丹", "sales", "A")
    spare = api.user("临时", "sales", "A")
    other_manager = api.user("陈经理", "manager", "B")
    other = api.user("孙娜", "sales", "B")
    lead = api.lead(manager, name="张三")
    api.client(manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": owner.id})
    pool = api.lead(manager, name="公海客户")
    rule = (
        api.client(manager)
        .post(
            "/api/auto-transfer/rules",
            json={
                "name": "A组规则",
                "team": "A",
                "condition": "not_won_within",
                "thresholdDays": 30,
                "action": "public_pool",
            },
        )
        .json()["data"]
    )
    company_rule = (
        api.client(admin)
        .post(
            "/api/auto-transfer/rules",
            json={"name": "全公司规则", "condition": "not_won_within", "thresholdDays": 60, "action": "public_pool"},
        )
        .json()["data"]
    )
    # Distribution rules, switched off so that leads created by other calls stay where they are.
    drule = (
        api.client(manager)
        .post(
            "/api/distribution-rules", json={"name": "A组分配", "team": "A", "action": "round_robin", "enabled": False}
        )
        .json()["data"]
    )
    company_drule = (
        api.client(admin)
        .post("/api/distribution-rules", json={"name": "全公司分配", "action": "pool", "enabled": False})
        .json()["data"]
    )
    empty_team = api.client(admin).post("/api/teams", json={"name": "C"}).json()["data"]
    source = api.client(admin).post("/api/lead-sources", json={"key": "矩阵", "name": "矩阵"}).json()["data"]
    # Team A's pool, with one member added by hand (周丹, of team A: no caller's access changes).
    team_pool = api.client(manager).post("/api/pools", json={"name": "A组线索池", "team": "A"}).json()["data"]
    api.client(manager).post(f"/api/pools/{team_pool['id']}/members", json={"userId": target.id})
    # First-contact rules, switched off so that no assignment made by other calls starts a ladder.
    sla_rule = (
        api.client(manager)
        .post(
            "/api/sla-rules",
            json={"name": "A组首次联系", "team": "A", "remindAfterMinutes": 5, "enabled": False},
        )
        .json()["data"]
    )
    company_sla_rule = (
        api.client(admin)
        .post("/api/sla-rules", json={"name": "全公司首次联系", "remindAfterMinutes": 10, "enabled": False})
        .json()["data"]
    )
    with api.ctx.db.write() as s:  # one dead delivery for the retry endpoint
        s.execute(update(Delivery).values(status="dead", last_error="测试"))
        dead_id = s.query(Delivery.id).order_by(Delivery.id).first()[0]
        # One of the owner's (team A's) deliveries, for the delivery's detail.
        owner_delivery_id = (
            s.query(Delivery.id).filter(Delivery.recipient_id == owner.id).order_by(Delivery.id).first()[0]
        )
        token_id = s.query(ApiToken.id).filter(ApiToken.user_id == spare.id).one()[0]
    return World(
        api=api,
        tokens={
            "anonymous": None,
            "bad_token": "lp_this-is-not-a-token",
            "owner": owner.token,
            "same_team": same.token,
            "other_team": other.token,
            "manager": manager.token,
            "other_manager": other_manager.token,
            "admin": admin.token,
        },
        ids={
            "lead": lead["id"],
            "pool": pool["id"],
            "target": target.id,
            "spare": spare.id,
            "rule": rule["id"],
            "company_rule": company_rule["id"],
            "drule": drule["id"],
            "company_drule": company_drule["id"],
            "other": other.id,
            "admin": admin.id,
            "delivery": dead_id,
            "owner_delivery": owner_delivery_id,
            "team_pool": team_pool["id"],
            "pool_member": target.id,
            "sla_rule": sla_rule["id"],
            "company_sla_rule": company_sla_rule["id"],
            "owner": owner.id,
            "team": empty_team["id"],
            "token": token_id,
            "source": source["source"]["id"],
            "source_key": source["source"]["key"],
        },
    )


# A follow-up plan's time: ahead of the world's clock (a FakeClock at the real time), within the year allowed.
PLAN_AT = (datetime.now(UTC) + timedelta(days=30)).isoformat()

# endpoint: (method, path template, body) -> statuses for the callers, in CALLERS order
MATRIX: dict[str, tuple[str, str, Any, tuple[int, ...]]] = {
    #                                                                                 anon bad  own  same othr mgr  omgr admin
    "me": ("GET", "/api/me", None, (401, 401, 200, 200, 200, 200, 200, 200)),
    "users.list": ("GET", "/api/users", None, (401, 401, 200, 200, 200, 200, 200, 200)),
    "users.create": (
        "POST",
        "/api/users",
        {"name": "新人", "role": "sales", "team": "A"},
        (401, 401, 403, 403, 403, 403, 403, 201),
    ),
    "users.update": ("PATCH", "/api/users/{spare}", {"capacity": 10}, (401, 401, 403, 403, 403, 403, 403, 200)),
    "users.token": ("POST", "/api/users/{spare}/tokens", None, (401, 401, 403, 403, 403, 403, 403, 201)),
    "users.revoke": ("POST", "/api/users/{spare}/tokens/revoke", None, (401, 401, 403, 403, 403, 403, 403, 200)),
    "teams.list": ("GET", "/api/teams", None, (401, 401, 200, 200, 200, 200, 200, 200)),
    "teams.create": ("POST", "/api/teams", {"name": "新团队"}, (401, 401, 403, 403, 403, 403, 403, 201)),
    "teams.rename": ("PATCH", "/api/teams/{team}", {"name": "改名"}, (401, 401, 403, 403, 403, 403, 403, 200)),
    "teams.delete": ("DELETE", "/api/teams/{team}", None, (401, 401, 403, 403, 403, 403, 403, 200)),
    "sources.list": ("GET", "/api/lead-sources", None, (401, 401, 403, 403, 403, 403, 403, 200)),
    "sources.create": (
        "POST",
        "/api/lead-sources",
        {"key": "新来源", "name": "新来源"},
        (401, 401, 403, 403, 403, 403, 403, 201),
    ),
    "sources.get": ("GET", "/api/lead-sources/{source}", None, (401, 401, 403, 403, 403, 403, 403, 200)),
    "sources.update": (
        "PATCH",
        "/api/lead-sources/{source}",
        {"name": "改名"},
        (401, 401, 403, 403, 403, 403, 403, 200),
    ),
    "sources.rotate": ("POST", "/api/lead-sources/{source}/rotate", None, (401, 401, 403, 403, 403, 403, 403, 200)),
    "sources.delete": ("DELETE", "/api/lead-sources/{source}", None, (401, 401, 403, 403, 403, 403, 403, 200)),
    # Lead intake signs in with a lead source's intake token or signature: no user's token opens it.
    "inbound.leads": ("POST", "/api/leads/inbound", {"phone": "13800000000"}, (401, 401, 401, 401, 401, 401, 401, 401)),
    "inbound.form": (
        "POST",
        "/api/leads/inbound/{source_key}/form",
        {"phone": "13800000000"},
        (401, 401, 401, 401, 401, 401, 401, 401),
    ),
    "leads.create": (
        "POST",
        "/api/customers",
        {"name": "新客户", "phone": "13600136000"},
        (401, 401, 201, 201, 201, 201, 201, 201),
    ),
    # Importing is for admins and managers; an empty upload then answers 422 import_empty (nothing written).
    "leads.import": ("POST", "/api/customers/import", None, (401, 401, 403, 403, 403, 422, 422, 422)),
    "leads.list": ("GET", "/api/customers", None, (401, 401, 200, 200, 200, 200, 200, 200)),
    "leads.pool": ("GET", "/api/customers/public-pool", None, (401, 401, 200, 200, 200, 200, 200, 200)),
    "leads.get": ("GET", "/api/customers/{lead}", None, (401, 401, 200, 404, 404, 200, 404, 200)),
    "leads.get_pool": ("GET", "/api/customers/{pool}", None, (401, 401, 200, 200, 200, 200, 200, 200)),
    "followups.add": (
        "POST",
        "/api/customers/{lead}/follow-ups",
        {"content": "电话沟通"},
        (401, 401, 201, 404, 404, 201, 404, 201),
    ),
    "followups.list": ("GET", "/api/customers/{lead}/follow-ups", None, (401, 401, 200, 404, 404, 200, 404, 200)),
    # Follow-up plans (下次跟进): whoever may record a follow-up; the day's list is each caller's own by default.
    "plan.set": (
        "PUT",
        "/api/customers/{lead}/follow-up-plan",
        {"at": PLAN_AT},
        (401, 401, 200, 404, 404, 200, 404, 200),
    ),
    "plan.clear": ("DELETE", "/api/customers/{lead}/follow-up-plan", None, (401, 401, 200, 404, 404, 200, 404, 200)),
    "plans.day": ("GET", "/api/follow-up-plans", None, (401, 401, 200, 200, 200, 200, 200, 200)),
    "history": ("GET", "/api/customers/{lead}/assignments", None, (401, 401, 200, 404, 404, 200, 404, 200)),
    "assign.web": (
        "PATCH",
        "/api/customers/{lead}/assign",
        {"assignedTo": "{target}"},
        (401, 401, 403, 403, 403, 200, 404, 200),
    ),
    "assign.mini": (
        "PATCH",
        "/api/customers/miniprogram/{lead}/assign",
        {"assignedTo": "{target}"},
        (401, 401, 403, 403, 403, 200, 404, 200),
    ),
    "assign.batch": (
        "POST",
        "/api/customers/batch-assign",
        {"customerIds": ["{lead}"], "assignedTo": "{target}"},
        (401, 401, 403, 403, 403, 200, 403, 200),
    ),
    "assign.pool": (
        "POST",
        "/api/customers/public-pool/assign",
        {"customerIds": ["{pool}"], "assignedTo": "{target}"},
        (401, 401, 403, 403, 403, 200, 403, 200),
    ),
    "claim": ("POST", "/api/customers/{pool}/claim", None, (401, 401, 200, 200, 200, 200, 200, 200)),
    # Claiming someone else's lead says "already claimed" even to those who cannot see it: in a race for a
    # pool lead, the loser is told what happened rather than that the lead on their screen does not exist.
    "claim.owned": ("POST", "/api/customers/{lead}/claim", None, (401, 401, 200, 409, 409, 409, 409, 409)),
    "release": ("POST", "/api/customers/{lead}/release", None, (401, 401, 200, 404, 404, 200, 404, 200)),
    "notes.poll": ("GET", "/api/notifications", None, (401, 401, 200, 200, 200, 200, 200, 200)),
    "notes.unread": ("GET", "/api/notifications/unread-count", None, (401, 401, 200, 200, 200, 200, 200, 200)),
    "notes.read": ("POST", "/api/notifications/read", {}, (401, 401, 200, 200, 200, 200, 200, 200)),
    "notes.ack": ("POST", "/api/notifications/ack", {}, (401, 401, 200, 200, 200, 200, 200, 200)),
    "deliveries": ("GET", "/api/deliveries", None, (401, 401, 403, 403, 403, 200, 200, 200)),
    # One delivery with its tries: the ledger's visibility (admins everyone's, managers their team's; another
    # team's is "not found").
    "deliveries.get": (
        "GET",
        "/api/deliveries/{owner_delivery}",
        None,
        (401, 401, 403, 403, 403, 200, 404, 200),
    ),
    "deliveries.retry": ("POST", "/api/deliveries/{delivery}/retry", None, (401, 401, 403, 403, 403, 403, 403, 200)),
    "rules.list": ("GET", "/api/auto-transfer/rules", None, (401, 401, 403, 403, 403, 200, 200, 200)),
    "rules.create": (
        "POST",
        "/api/auto-transfer/rules",
        {"name": "规则", "team": "A", "condition": "not_won_within", "thresholdDays": 7, "action": "public_pool"},
        (401, 401, 403, 403, 403, 201, 403, 201),
    ),
    "rules.preview": (
        "POST",
        "/api/auto-transfer/rules/preview",
        {"name": "规则", "team": "A", "condition": "not_won_within", "thresholdDays": 7, "action": "public_pool"},
        (401, 401, 403, 403, 403, 200, 403, 200),
    ),
    "rules.update": (
        "PATCH",
        "/api/auto-transfer/rules/{rule}",
        {"enabled": False},
        (401, 401, 403, 403, 403, 200, 404, 200),
    ),
    "rules.delete": ("DELETE", "/api/auto-transfer/rules/{rule}", None, (401, 401, 403, 403, 403, 200, 404, 200)),
    # Company-wide rules (team null) are an admin's alone; managers see them but cannot change them.
    "rules.update.company": (
        "PATCH",
        "/api/auto-transfer/rules/{company_rule}",
        {"enabled": False},
        (401, 401, 403, 403, 403, 403, 403, 200),
    ),
    "rules.delete.company": (
        "DELETE",
        "/api/auto-transfer/rules/{company_rule}",
        None,
        (401, 401, 403, 403, 403, 403, 403, 200),
    ),
    # A manager's rule hands leads only to whom the manager may assign a lead by hand.
    "rules.create.other_team_target": (
        "POST",
        "/api/auto-transfer/rules",
        {
            "name": "转给外组",
            "team": "A",
            "condition": "not_won_within",
            "thresholdDays": 7,
            "action": "user",
            "targetUserId": "{other}",
        },
        (401, 401, 403, 403, 403, 403, 403, 201),
    ),
    "rules.create.admin_target": (
        "POST",
        "/api/auto-transfer/rules",
        {
            "name": "转给管理员",
            "team": "A",
            "condition": "not_won_within",
            "thresholdDays": 7,
            "action": "user",
            "targetUserId": "{admin}",
        },
        (401, 401, 403, 403, 403, 403, 403, 201),
    ),
    "rules.update.other_team_target": (
        "PATCH",
        "/api/auto-transfer/rules/{rule}",
        {"action": "user", "targetUserId": "{other}"},
        (401, 401, 403, 403, 403, 403, 404, 200),
    ),
    "routing.list": ("GET", "/api/distribution-rules", None, (401, 401, 403, 403, 403, 200, 200, 200)),
    "routing.create": (
        "POST",
        "/api/distribution-rules",
        {"name": "分配", "team": "A", "action": "round_robin", "enabled": False},
        (401, 401, 403, 403, 403, 201, 403, 201),
    ),
    "routing.get": ("GET", "/api/distribution-rules/{drule}", None, (401, 401, 403, 403, 403, 200, 404, 200)),
    "routing.update": (
        "PATCH",
        "/api/distribution-rules/{drule}",
        {"name": "改名"},
        (401, 401, 403, 403, 403, 200, 404, 200),
    ),
    "routing.delete": ("DELETE", "/api/distribution-rules/{drule}", None, (401, 401, 403, 403, 403, 200, 404, 200)),
    # A company-wide distribution rule is an admin's alone, like a company-wide transfer rule.
    "routing.update.company": (
        "PATCH",
        "/api/distribution-rules/{company_drule}",
        {"name": "改名"},
        (401, 401, 403, 403, 403, 403, 403, 200),
    ),
    "routing.update.other_team_target": (
        "PATCH",
        "/api/distribution-rules/{drule}",
        {"action": "user", "targetUserId": "{other}"},
        (401, 401, 403, 403, 403, 403, 404, 200),
    ),
    "routing.reorder": (
        "POST",
        "/api/distribution-rules/reorder",
        {"ruleIds": ["{drule}"]},
        (401, 401, 403, 403, 403, 200, 404, 200),
    ),
    "routing.dry_run": (
        "POST",
        "/api/distribution-rules/dry-run",
        {"source": "官网"},
        (401, 401, 403, 403, 403, 200, 200, 200),
    ),
    # Working hours and leave: one's own, one's team's (managers), anyone's (admins).
    "availability.get": ("GET", "/api/users/{owner}/availability", None, (401, 401, 200, 403, 403, 200, 403, 200)),
    "availability.put": (
        "PUT",
        "/api/users/{owner}/availability",
        {"workingHours": None},
        (401, 401, 200, 403, 403, 200, 403, 200),
    ),
    # Notification preferences: one's own; one's team's (managers), anyone's (admins). Team defaults: the
    # team's managers and admins (team C has no manager).
    "prefs.mine": ("GET", "/api/me/notification-preferences", None, (401, 401, 200, 200, 200, 200, 200, 200)),
    "prefs.mine.put": (
        "PUT",
        "/api/me/notification-preferences",
        {"urgentOverride": False},
        (401, 401, 200, 200, 200, 200, 200, 200),
    ),
    "prefs.get": (
        "GET",
        "/api/users/{owner}/notification-preferences",
        None,
        (401, 401, 200, 403, 403, 200, 403, 200),
    ),
    "prefs.put": (
        "PUT",
        "/api/users/{owner}/notification-preferences",
        {"quietMode": "none"},
        (401, 401, 200, 403, 403, 200, 403, 200),
    ),
    "teamprefs.get": (
        "GET",
        "/api/teams/{team}/notification-defaults",
        None,
        (401, 401, 403, 403, 403, 403, 403, 200),
    ),
    "teamprefs.put": (
        "PUT",
        "/api/teams/{team}/notification-defaults",
        {"quietMode": "working_hours"},
        (401, 401, 403, 403, 403, 403, 403, 200),
    ),
    # Team pools (线索池): seen by the team, its members and admins (others: 404, as if it did not exist);
    # handed out by its pool admins, the team's managers and admins; managed by the team's managers and admins.
    "pools.list": ("GET", "/api/pools", None, (401, 401, 200, 200, 200, 200, 200, 200)),
    "pools.create": (
        "POST",
        "/api/pools",
        {"name": "新线索池", "team": "A"},
        (401, 401, 403, 403, 403, 201, 403, 201),
    ),
    # A pool without a team (seen by its members only) is an admin's alone.
    "pools.create.company": (
        "POST",
        "/api/pools",
        {"name": "全公司线索池"},
        (401, 401, 403, 403, 403, 403, 403, 201),
    ),
    "pools.get": ("GET", "/api/pools/{team_pool}", None, (401, 401, 200, 200, 404, 200, 404, 200)),
    "pools.assignees": (
        "GET",
        "/api/pools/{team_pool}/assignees",
        None,
        (401, 401, 403, 403, 404, 200, 404, 200),
    ),
    "pools.update": (
        "PATCH",
        "/api/pools/{team_pool}",
        {"claimDailyLimit": 5},
        (401, 401, 403, 403, 404, 200, 404, 200),
    ),
    "pools.delete": ("DELETE", "/api/pools/{team_pool}", None, (401, 401, 403, 403, 404, 200, 404, 200)),
    "pools.member.add": (
        "POST",
        "/api/pools/{team_pool}/members",
        {"userId": "{spare}", "role": "admin"},
        (401, 401, 403, 403, 404, 200, 404, 200),
    ),
    "pools.member.remove": (
        "DELETE",
        "/api/pools/{team_pool}/members/{pool_member}",
        None,
        (401, 401, 403, 403, 404, 200, 404, 200),
    ),
    # First-contact rules (首次联系): like the other team rules, a team's are its managers' and admins';
    # a company-wide one (team null) is an admin's alone, which managers see but cannot change.
    "sla.list": ("GET", "/api/sla-rules", None, (401, 401, 403, 403, 403, 200, 200, 200)),
    "sla.create": (
        "POST",
        "/api/sla-rules",
        {"name": "首次联系", "team": "A", "remindAfterMinutes": 5, "enabled": False},
        (401, 401, 403, 403, 403, 201, 403, 201),
    ),
    "sla.create.company": (
        "POST",
        "/api/sla-rules",
        {"name": "全公司", "remindAfterMinutes": 5, "enabled": False},
        (401, 401, 403, 403, 403, 403, 403, 201),
    ),
    "sla.update": (
        "PATCH",
        "/api/sla-rules/{sla_rule}",
        {"name": "改名"},
        (401, 401, 403, 403, 403, 200, 404, 200),
    ),
    "sla.delete": ("DELETE", "/api/sla-rules/{sla_rule}", None, (401, 401, 403, 403, 403, 200, 404, 200)),
    "sla.update.company": (
        "PATCH",
        "/api/sla-rules/{company_sla_rule}",
        {"name": "改名"},
        (401, 401, 403, 403, 403, 403, 403, 200),
    ),
    "sla.delete.company": (
        "DELETE",
        "/api/sla-rules/{company_sla_rule}",
        None,
        (401, 401, 403, 403, 403, 403, 403, 200),
    ),
    # The speed-to-lead report: everyone, over what they may see (themselves; a manager their team; admins all).
    "reports.speed": ("GET", "/api/reports/speed-to-lead", None, (401, 401, 200, 200, 200, 200, 200, 200)),
    "transfer.run": ("POST", "/api/auto-transfer/run", {"dryRun": True}, (401, 401, 403, 403, 403, 200, 200, 200)),
    "transfer.runs": ("GET", "/api/auto-transfer/runs", None, (401, 401, 403, 403, 403, 200, 200, 200)),
    "wechat.credits": ("GET", "/api/wechat/subscriptions", None, (401, 401, 200, 200, 200, 200, 200, 200)),
    "wechat.report": (
        "POST",
        "/api/wechat/subscriptions",
        {"errMsg": "requestSubscribeMessage:ok"},
        (401, 401, 200, 200, 200, 200, 200, 200),
    ),
    "wechat.login": ("POST", "/api/wechat/login", {"code": "0a1b2c"}, (401, 401, 503, 503, 503, 503, 503, 503)),
    # Signing in needs no token (a wrong password is 401 for everyone; WeChat is not configured here).
    "auth.login": (
        "POST",
        "/api/auth/login",
        {"loginName": "nobody", "password": "wrong-password"},
        (401, 401, 401, 401, 401, 401, 401, 401),
    ),
    "auth.miniprogram": ("POST", "/api/auth/miniprogram", {"code": "0a1b2c"}, (503,) * 8),
    # Signing out ends a session; these callers hold API tokens.
    "auth.logout": ("POST", "/api/auth/logout", None, (401, 401, 400, 400, 400, 400, 400, 400)),
    # Nobody here has a login name yet, which a password needs.
    "me.password": ("POST", "/api/me/password", {"newPassword": "long-enough-1"}, (401, 401) + (422,) * 6),
    "users.password": (
        "POST",
        "/api/users/{spare}/password",
        {"newPassword": "long-enough-1"},
        (401, 401, 403, 403, 403, 403, 403, 422),
    ),
    "tokens.list": ("GET", "/api/tokens", None, (401, 401, 200, 200, 200, 200, 200, 200)),
    "tokens.create": ("POST", "/api/tokens", {"name": "对接"}, (401, 401, 201, 201, 201, 201, 201, 201)),
    "tokens.revoke": ("DELETE", "/api/tokens/{token}", None, (401, 401, 404, 404, 404, 404, 404, 200)),
    "healthz": ("GET", "/healthz", None, (200, 200, 200, 200, 200, 200, 200, 200)),
    "readyz": ("GET", "/readyz", None, (200, 200, 200, 200, 200, 200, 200, 200)),
    "metrics": ("GET", "/metrics", None, (200, 200, 200, 200, 200, 200, 200, 200)),
}


def fill(value: Any, ids: dict[str, int]) -> Any:
    if isinstance(value, str) and value.startswith("{") and value.endswith("}") and value[1:-1] in ids:
        return ids[value[1:-1]]
    if isinstance(value, list):
        return [fill(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    return value


CASES = [(name, caller) for name in MATRIX for caller in CALLERS]


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("endpoint", "caller"), CASES, ids=[f"{n}-{c}" for n, c in CASES])
def test_matrix(world: World, endpoint: str, caller: str):
    method, path, body, expected = MATRIX[endpoint]
    want = expected[CALLERS.index(caller)]
    client = world.api.client(world.tokens[caller])
    kwargs = {"json": fill(body, world.ids)} if body is not None else {}
    r = client.request(method, path.format(**world.ids), **kwargs)
    assert r.status_code == want, (endpoint, caller, r.text)
    if r.status_code >= 400 and path.startswith("/api/"):
        payload = r.json()
        assert payload["success"] is False and payload["code"] and payload["message"]


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_every_api_route_is_in_the_matrix(world: World):
    """A new endpoint cannot ship without deciding who may call it."""
    from fastapi.routing import APIRoute

    from leadpush.app import create_app

    app = create_app(world.api.ctx)
    declared = {(m, p) for m, p, _b, _e in MATRIX.values()}
    normalized = set()
    for m, p in declared:
        normalized.add(
            (
                m,
                p.replace("{lead}", "{customer_id:int}")
                .replace("{pool}", "{customer_id:int}")
                .replace("{spare}", "{user_id:int}")
                .replace("{rule}", "{rule_id:int}")
                .replace("{company_rule}", "{rule_id:int}")
                .replace("{company_drule}", "{rule_id:int}")
                .replace("{drule}", "{rule_id:int}")
                .replace("{owner}", "{user_id:int}")
                .replace("{delivery}", "{delivery_id:int}")
                .replace("{team}", "{team_id:int}")
                .replace("{token}", "{token_id:int}")
                .replace("{source}", "{source_id:int}")
                .replace("{owner_delivery}", "{delivery_id:int}")
                .replace("{team_pool}", "{pool_id:int}")
                .replace("{pool_member}", "{user_id:int}")
                .replace("{company_sla_rule}", "{rule_id:int}")
                .replace("{sla_rule}", "{rule_id:int}"),
            )
        )
    api_routes = [r for r in app.routes if isinstance(r, APIRoute) and r.path.startswith("/api/")]
    # The routes are seen at all: until the app's routes were its own (`include_flat`), `app.routes` held
    # FastAPI's included routers, not `APIRoute`s, and this test compared nothing.
    assert len(api_routes) > 50
    missing = []
    for route in api_routes:
        for method in route.methods:
            if (method, route.path) not in normalized:
                missing.append(f"{method} {route.path}")
    assert sorted(missing) == []


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
@pytest.mark.parametrize("caller", CALLERS)
def test_websocket(world: World, caller: str):
    token = world.tokens[caller]
    url = world.api.url.replace("http://", "ws://") + "/ws" + (f"?token={token}" if token else "")
    with connect(url, open_timeout=5) as ws:
        if caller in ("anonymous", "bad_token"):
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=5)
            assert info.value.rcvd.code == 1008
        else:
            import json

            hello = json.loads(ws.recv(timeout=5))
            assert hello["type"] == "hello"
