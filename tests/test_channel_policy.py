"""The channel policy: which channels each kind uses, fallbacks, and what each delivery row says."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from pydantic import ValidationError

from leadpush.config import Settings
from leadpush.notify.policy import chain_of, parse_policy, plan_deliveries

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
    assert chain_of(s, "customer_assigned", "wecom") == ("wechat", "wecom")


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
    assert policy["customer_assigned"] == (("inapp",), ("wecom",), ("wechat",), ("webhook",))


def test_webhook_follows_the_policy_when_configured() -> None:
    s = Settings(**BOTH, webhook_url="https://hooks.example.com/x")
    assert plan(s)[-1] == ("webhook", "pending")


@pytest.mark.parametrize(
    "raw",
    ["not json", "[]", '{"customer_assigned": "wechat"}', '{"customer_assigned": ["sms"]}', '{"x": [1]}'],
)
def test_a_bad_policy_stops_the_service_from_starting(raw: str) -> None:
    with pytest.raises(ValidationError, match="LEADPUSH_CHANNEL_POLICY"):
        Settings(channel_policy=raw)
