"""How a person's channel choice reshapes the policy's chains when deliveries are planned (pure, no database)."""

from __future__ import annotations

from dataclasses import dataclass

from leadpush.config import Settings
from leadpush.notify.policy import chosen_chains, parse_policy, plan_deliveries
from leadpush.notify.preferences import chosen_for, effective_channels

DEFAULT = parse_policy(None)


@dataclass
class Person:
    id: int = 7
    wechat_openid: str | None = "o-1"
    wecom_userid: str | None = "u-1"


def settings(**kw: object) -> Settings:
    return Settings(
        database_url="sqlite://",
        wechat_appid="wx",
        wechat_secret="s",
        wechat_template_id="TPL",
        wecom_corpid="ww",
        wecom_secret="s",
        wecom_agentid=1,
        **kw,  # type: ignore[arg-type]
    )


def plans(s: Settings, kind: str, chosen: list[str] | None, who: Person | None = None) -> list[tuple[str, str]]:
    return [(p.channel, p.status) for p in plan_deliveries(s, kind, who or Person(), None, chosen)]


def test_no_choice_is_the_policy() -> None:
    chains = DEFAULT.chains_for("customer_assigned")
    assert chosen_chains(chains, None) == chains == (("inapp",), ("wechat", "wecom"), ("webhook",))


def test_a_channel_turned_off_leaves_its_chain() -> None:
    chains = DEFAULT.chains_for("customer_assigned")
    assert chosen_chains(chains, ["wecom"]) == (("inapp",), ("wecom",), ("webhook",))
    assert chosen_chains(chains, []) == (("inapp",), ("webhook",))


def test_a_channel_turned_on_joins_the_other_personal_channel_after_it() -> None:
    warning = DEFAULT.chains_for("transfer_warning")  # "*": inapp, wecom, webhook
    assert chosen_chains(warning, ["wechat", "wecom"]) == (("inapp",), ("wecom", "wechat"), ("webhook",))
    assert chosen_chains(warning, ["wechat"]) == (("inapp",), ("wechat",), ("webhook",))


def test_a_channel_turned_on_is_a_chain_of_its_own_when_the_kind_has_no_personal_channel() -> None:
    policy = parse_policy('{"lead_duplicate": ["inapp", "webhook"]}')
    assert chosen_chains(policy.chains_for("lead_duplicate"), ["wechat"]) == (("inapp",), ("wechat",), ("webhook",))


def test_planning_records_a_turned_off_channel_only_for_a_bound_person() -> None:
    s = settings()
    assert plans(s, "customer_assigned", ["wecom"]) == [
        ("wechat", "skipped"),
        ("inapp", "pending"),
        ("wecom", "pending"),
    ]
    unbound = Person(wechat_openid=None)
    assert plans(s, "customer_assigned", ["wecom"], unbound) == [("inapp", "pending"), ("wecom", "pending")]
    assert plans(s, "transfer_warning", ["wechat", "wecom"]) == [("inapp", "pending"), ("wecom", "pending")]
    assert plans(s, "transfer_warning", ["wechat"]) == [
        ("wecom", "skipped"),
        ("inapp", "pending"),
        ("wechat", "pending"),
    ]
    # WeCom not bound: WeChat, next in the chain the choice made, is the one planned.
    assert plans(s, "transfer_warning", ["wechat", "wecom"], Person(wecom_userid=None)) == [
        ("inapp", "pending"),
        ("wechat", "pending"),
    ]


def test_only_the_channels_the_admin_allows_are_the_persons_to_choose() -> None:
    s = settings(preference_channels='{"new_leads": ["wecom"]}')
    # WeChat is not theirs to turn off for new leads: it stays as the policy has it.
    assert chosen_for(s, {"new_leads": []}, "customer_assigned") == ["wechat"]
    assert chosen_for(s, {"new_leads": ["wechat", "wecom"]}, "customer_assigned") == ["wechat", "wecom"]
    # Categories the admin did not list: both channels are theirs.
    assert chosen_for(s, {"transfer_warning": ["wechat"]}, "transfer_warning") == ["wechat"]
    assert chosen_for(s, None, "transfer_warning") is None
    assert effective_channels(s, {"new_leads": []}, "new_leads") == ["wechat"]
    assert effective_channels(s, {"transfer_warning": ["wechat", "wecom"]}, "transfer_warning") == ["wechat", "wecom"]
