"""The channel policy: which channels each kind uses, fallbacks, and what each delivery row says."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from pydantic import ValidationError

from leadpush.config import Settings
from leadpush.notify.models import CHANNELS
from leadpush.notify.policy import NAMES, parse_policy, plan_deliveries

BOTH = dict(
    wechat_appid="wx",
    wechat_secret="s",
    wechat_template_id="T",
    wecom_corpid="ww",
    wecom_secret="s",
    wecom_agentid=1,
)


@dataclass
class U:
    id: int = 1
    wechat_openid: str | None = "o-1"
    wecom_userid: str | None = "u1"


def plan(settings: Settings, kind: str = "customer_assigned", user: U | None = None, actor: int | None = 99):
    return [(p.channel, p.status) for p in plan_deliveries(settings, kind, user or U(), actor)]  # type: ignore[arg-type]


def test_default_assignment_goes_to_wechat_with_wecom_as_its_fallback() -> None:
    s = Settings(**BOTH)
    assert plan(s) == [("inapp", "pending"), ("wechat", "pending")]
    [_, wechat] = plan_deliveries(s, "customer_assigned", U(), 99)  # type: ignore[arg-type]
    assert "改用企业微信" in wechat.reason and "只发其一" in wechat.reason
    assert s.channel_policy.chain_of("customer_assigned", "wecom") == ("wechat", "wecom")


def test_without_an_openid_wecom_is_used_straight_away() -> None:
    assert plan(Settings(**BOTH), user=U(wechat_openid=None)) == [("inapp", "pending"), ("wecom", "pending")]


def test_an_unconfigured_channel_is_recorded_as_skipped_and_the_fallback_used() -> None:
    s = Settings(**{k: v for k, v in BOTH.items() if not k.startswith("wechat")})
    assert plan(s) == [("inapp", "pending"), ("wechat", "skipped"), ("wecom", "pending")]


def test_other_kinds_do_not_spend_wechat_credits_by_default() -> None:
    s = Settings(**BOTH)
    assert plan(s, "customer_recycled") == [("inapp", "pending"), ("wecom", "pending")]
    assert plan(s, "transfer_warning") == [("inapp", "pending"), ("wecom", "pending")]


def test_a_users_own_action_is_not_pushed_and_not_fallen_back() -> None:
    assert plan(Settings(**BOTH), actor=1) == [("inapp", "pending"), ("wechat", "skipped")]


def test_a_user_with_no_addresses_gets_in_app_only() -> None:
    assert plan(Settings(**BOTH), user=U(wechat_openid=None, wecom_userid=None)) == [("inapp", "pending")]


def test_a_deployment_can_send_both_or_prefer_wecom() -> None:
    both = Settings(**BOTH, channel_policy='{"customer_assigned": ["wechat", "wecom"]}')
    assert plan(both) == [("inapp", "pending"), ("wechat", "pending"), ("wecom", "pending")]
    wecom_first = Settings(**BOTH, channel_policy='{"*": ["wecom|wechat"], "customers_assigned": ["wecom|wechat"]}')
    assert plan(wecom_first, "customers_assigned") == [("inapp", "pending"), ("wecom", "pending")]
    assert plan(wecom_first, "transfer_warning") == [("inapp", "pending"), ("wecom", "pending")]
    assert plan(wecom_first, "customer_assigned") == [("inapp", "pending"), ("wechat", "pending")]  # default kept


def test_in_app_is_always_on_and_channels_are_not_repeated() -> None:
    policy = parse_policy('{"customer_assigned": ["wecom", "wecom|wechat", "webhook"]}')
    assert policy.chains_for("customer_assigned") == (("inapp",), ("wecom",), ("wechat",), ("webhook",))


def test_webhook_follows_the_policy_when_configured() -> None:
    s = Settings(**BOTH, webhook_url="https://hooks.example.com/x", webhook_secret="whsec-policy-test")
    assert plan(s)[-1] == ("webhook", "pending")


@pytest.mark.parametrize(
    "raw",
    ["not json", "[]", '{"customer_assigned": "wechat"}', '{"customer_assigned": ["sms"]}', '{"x": [1]}'],
)
def test_a_bad_policy_stops_the_service_from_starting(raw: str) -> None:
    with pytest.raises(ValidationError, match="LEADPUSH_CHANNEL_POLICY"):
        Settings(channel_policy=raw)


def test_the_fallback_is_not_mistaken_for_a_duplicate_while_its_trigger_is_still_recorded(tmp_path) -> None:
    """WeCom's row exists before WeChat's outcome is written (`sending`): WeCom must still send."""
    from datetime import UTC, datetime, timedelta

    from support import FakeClock

    from leadpush.context import AppContext
    from leadpush.migrate import upgrade
    from leadpush.notify.channels.base import DeliveryJob, Recipient
    from leadpush.notify.fallback import sent_alternative
    from leadpush.notify.models import Delivery, Notification
    from leadpush.users.service import create_user

    url = f"sqlite:///{tmp_path}/p.db"
    upgrade(url)
    ctx = AppContext.from_settings(Settings(database_url=url, **BOTH), clock=FakeClock())
    now = datetime.now(UTC)
    with ctx.db.write() as session:
        user, _ = create_user(
            session, name="李丽", role="sales", team="A", create_missing_team=True, wechat_openid="o", wecom_userid="u"
        )
        note = Notification(
            recipient_id=user.id, kind="customer_assigned", title="t", body="", payload={}, dedupe_key="k"
        )
        session.add(note)
        session.flush()
        rows = {
            c: Delivery(notification_id=note.id, recipient_id=user.id, channel=c, status=st)
            for c, st in (("wechat", "sending"), ("wecom", "pending"))
        }
        session.add_all(rows.values())
        session.flush()
        ids = {c: d.id for c, d in rows.items()}
        note_id, user_id = note.id, user.id

    def job(channel: str) -> DeliveryJob:
        return DeliveryJob(
            ids[channel], channel, 1, now + timedelta(seconds=60), note_id, None, "customer_assigned", "t", "", {},
            now, Recipient(user_id, "李丽", "o", "u"),
        )  # fmt: skip

    chain = ("wechat", "wecom")
    assert sent_alternative(ctx, job("wecom"), chain) is None
    assert sent_alternative(ctx, job("wechat"), chain) == "wecom"  # an admin retry of WeChat now: no
    with ctx.db.write() as session:
        session.get(Delivery, ids["wecom"]).status = "dead"
    assert sent_alternative(ctx, job("wechat"), chain) is None
    ctx.db.dispose()


def test_json_settings_are_parsed_once_into_typed_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    """The policy and the WeChat field map are read from the environment and parsed when the settings are
    made: what the code uses is a typed object, and a bad value stops the start with the variable's name."""
    from leadpush.notify.policy import ChannelPolicy

    monkeypatch.setenv("LEADPUSH_CHANNEL_POLICY", '{"customer_assigned": ["wecom|wechat"]}')
    monkeypatch.setenv("LEADPUSH_WECHAT_FIELD_MAP", '{"thing7": "customerName"}')
    s = Settings()
    assert isinstance(s.channel_policy, ChannelPolicy)
    assert s.channel_policy.chains_for("customer_assigned") == (("inapp",), ("wecom", "wechat"))
    assert s.channel_policy.chains_for("transfer_warning") == (("inapp",), ("wecom",), ("webhook",))
    assert s.wechat_field_map == {"thing7": "customerName"}
    assert isinstance(Settings(channel_policy=None).channel_policy, ChannelPolicy)

    monkeypatch.setenv("LEADPUSH_CHANNEL_POLICY", '{"customer_assigned": ["sms"]}')
    with pytest.raises(ValidationError, match="LEADPUSH_CHANNEL_POLICY: unknown channel 'sms'"):
        Settings()
    monkeypatch.delenv("LEADPUSH_CHANNEL_POLICY")
    monkeypatch.setenv("LEADPUSH_WECHAT_FIELD_MAP", "[]")
    with pytest.raises(ValidationError, match="LEADPUSH_WECHAT_FIELD_MAP"):
        Settings()


def test_the_policy_knows_every_channel_of_the_ledger() -> None:
    assert set(NAMES) == set(CHANNELS)
