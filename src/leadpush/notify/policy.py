"""Which channels a notification goes to, and why each is used or skipped: a pure parser and planner.

The policy (LEADPUSH_CHANNEL_POLICY, JSON) maps a notification kind to a list of steps. A step is a
channel ("wecom") or a fallback chain ("wechat|wecom": WeChat, and only if that cannot deliver,
WeCom). Every step is tried; within a chain exactly one channel ends up sending. "*" covers kinds
not listed; in-app is always on. Example, the default::

    {"customer_assigned": ["inapp", "wechat|wecom", "webhook"],
     "customers_assigned": ["inapp", "wechat|wecom", "webhook"],
     "sla_reminder": ["inapp", "wecom|wechat", "webhook"],
     "sla_escalated": ["inapp", "wecom|wechat", "webhook"],
     "*": ["inapp", "wecom", "webhook"]}

The settings parse it once, at start-up, into a `ChannelPolicy`. At ledger time only the first usable
channel of a chain gets a delivery row (`plan_deliveries`). The next one's row is created only when
that delivery ends without reaching the user (skipped — e.g. no WeChat credit — or dead), at send
time, by `notify.fallback`. This module touches no database and knows no channel class.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

DEFAULT_POLICY: dict[str, list[str]] = {
    "customer_assigned": ["inapp", "wechat|wecom", "webhook"],
    "customers_assigned": ["inapp", "wechat|wecom", "webhook"],
    # First-contact escalations go to the strongest channel: WeCom for staff who have it, else WeChat.
    "sla_reminder": ["inapp", "wecom|wechat", "webhook"],
    "sla_escalated": ["inapp", "wecom|wechat", "webhook"],
    # A follow-up the salesperson planned themselves (下次跟进): their phone, WeCom first.
    "followup_due": ["inapp", "wecom|wechat", "webhook"],
    "*": ["inapp", "wecom", "webhook"],
}
# What a person chooses channels for (their preferences), each covering some notification kinds. In order
# of what matters most: the last WeChat credits go to the first (LEADPUSH_WECHAT_CREDIT_RESERVE).
CATEGORIES: dict[str, tuple[str, ...]] = {
    "new_leads": ("customer_assigned", "customers_assigned"),
    "first_contact": ("sla_reminder", "sla_escalated"),
    "follow_up": ("followup_due",),
    "transfer_warning": ("transfer_warning",),
    "lead_updates": ("lead_duplicate",),
    "taken_back": ("customer_recycled", "customers_recycled"),
}
CATEGORY_NAMES = {
    "new_leads": "新线索",
    "first_contact": "首次联系提醒",
    "follow_up": "跟进提醒",
    "transfer_warning": "流转预警",
    "lead_updates": "线索动态",
    "taken_back": "线索被收回",
}
# Channels a person may choose per category (in-app is always on; the webhook is the company's, not theirs).
PERSONAL_CHANNELS = ("wechat", "wecom")
# Urgent kinds may still come in quiet hours (a person's `urgent_override`) and are never held for a digest.
URGENT_KINDS = ("sla_reminder", "sla_escalated")


def category_of(kind: str) -> str:
    """The preference category of a notification kind (unknown kinds count as lead updates)."""
    for category, kinds in CATEGORIES.items():
        if kind in kinds:
            return category
    return "lead_updates"


# Every channel a policy may name (notify.models.CHANNELS), with the name an operator reads.
NAMES = {"inapp": "站内通知", "wechat": "微信小程序", "wecom": "企业微信", "webhook": "对接系统推送"}

Chain = tuple[str, ...]


@dataclass(frozen=True)
class ChannelPolicy:
    """A parsed policy: per notification kind, its steps as chains, in-app first, no channel twice."""

    kinds: Mapping[str, tuple[Chain, ...]]

    def chains_for(self, kind: str) -> tuple[Chain, ...]:
        return self.kinds.get(kind) or self.kinds["*"]

    def chain_of(self, kind: str, channel: str) -> Chain:
        """The chain `channel` belongs to for this kind (a chain of its own when the policy has none)."""
        for chain in self.chains_for(kind):
            if channel in chain:
                return chain
        return (channel,)


class PolicySettings(Protocol):
    """What planning needs from the settings: the parsed policy and which channels are configured."""

    @property
    def channel_policy(self) -> ChannelPolicy: ...
    @property
    def wechat_enabled(self) -> bool: ...
    @property
    def wecom_enabled(self) -> bool: ...
    @property
    def webhook_enabled(self) -> bool: ...


class Addressee(Protocol):
    """A recipient as far as the policy cares: who, and which push addresses they have."""

    @property
    def id(self) -> int: ...
    @property
    def wechat_openid(self) -> str | None: ...
    @property
    def wecom_userid(self) -> str | None: ...


@dataclass(frozen=True)
class ChannelPlan:
    channel: str
    status: str  # pending | skipped
    reason: str


class Verdict(NamedTuple):
    usable: bool
    skip_reason: str | None  # when not usable: the reason to record as a skipped row, or None for no row
    why: str  # when usable: why this channel is used


def _steps(raw: str | None) -> dict[str, list[str]]:
    """The default policy's steps, with the kinds given in `raw` (JSON) replacing theirs."""
    merged: dict[str, list[str]] = dict(DEFAULT_POLICY)
    if raw is None or not raw.strip():
        return merged
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"LEADPUSH_CHANNEL_POLICY is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("LEADPUSH_CHANNEL_POLICY must be a JSON object: kind -> list of steps")
    for kind, steps in data.items():
        if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
            raise ValueError(f"LEADPUSH_CHANNEL_POLICY[{kind!r}] must be a list of strings like 'wechat|wecom'")
        merged[kind] = steps
    return merged


def _chains(steps: list[str]) -> tuple[Chain, ...]:
    chains: list[Chain] = [("inapp",)]
    seen = {"inapp"}
    for step in steps:
        chain = tuple(c.strip() for c in step.split("|") if c.strip())
        unknown = [c for c in chain if c not in NAMES]
        if unknown:
            raise ValueError(f"LEADPUSH_CHANNEL_POLICY: unknown channel {unknown[0]!r} (known: {', '.join(NAMES)})")
        chain = tuple(c for c in dict.fromkeys(chain) if c not in seen)
        seen.update(chain)
        if chain:
            chains.append(chain)
    return tuple(chains)


def parse_preference_channels(raw: object) -> dict[str, list[str]] | None:
    """LEADPUSH_PREFERENCE_CHANNELS (JSON: category -> the push channels people may choose) or None (all).

    Categories not listed allow every personal channel. Raises ValueError naming the variable.
    """
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    data = raw
    if isinstance(raw, str):
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"LEADPUSH_PREFERENCE_CHANNELS is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("LEADPUSH_PREFERENCE_CHANNELS must be a JSON object: category -> list of channels")
    out: dict[str, list[str]] = {}
    for category, channels in data.items():
        if category not in CATEGORIES:
            raise ValueError(
                f"LEADPUSH_PREFERENCE_CHANNELS: unknown category {category!r} (known: {', '.join(CATEGORIES)})"
            )
        if not isinstance(channels, list) or any(c not in PERSONAL_CHANNELS for c in channels):
            raise ValueError(
                f"LEADPUSH_PREFERENCE_CHANNELS[{category!r}] must be a list of {', '.join(PERSONAL_CHANNELS)}"
            )
        out[category] = list(dict.fromkeys(channels))
    return out


def parse_policy(raw: str | None) -> ChannelPolicy:
    """LEADPUSH_CHANNEL_POLICY (JSON text; None or blank = the default) as a `ChannelPolicy`.

    Raises ValueError naming the variable, so a bad policy stops the service from starting.
    """
    return ChannelPolicy({kind: _chains(steps) for kind, steps in _steps(raw).items()})


def judge(
    settings: PolicySettings, channel: str, openid: str | None, wecom_userid: str | None, self_action: bool
) -> Verdict:
    """Whether `channel` can reach a user with these addresses, and what to record when it cannot."""
    if channel == "inapp":
        return Verdict(True, None, "站内通知始终发送")
    if channel == "webhook":
        return Verdict(True, None, "已配置对接系统推送") if settings.webhook_enabled else Verdict(False, None, "")
    address, enabled, bound = (
        (openid, settings.wechat_enabled, "用户已绑定小程序 openid")
        if channel == "wechat"
        else (wecom_userid, settings.wecom_enabled, "用户已绑定企业微信账号")
    )
    if not address:
        return Verdict(False, None, "")
    if not enabled:
        return Verdict(False, f"未配置{NAMES[channel]}渠道", "")
    if self_action:
        return Verdict(False, "本人操作，不推送", "")
    return Verdict(True, None, bound)


def describe(chain: Chain, channel: str, why: str) -> str:
    """Why `channel` is used, and which channels of its chain take over should it not reach the user."""
    rest = chain[chain.index(channel) + 1 :]
    if not rest:
        return why
    return f"{why}；未送达时改用{'、'.join(NAMES[c] for c in rest)}（{'|'.join(chain)}，只发其一）"


def chosen_chains(chains: Sequence[Chain], chosen: Collection[str] | None) -> tuple[Chain, ...]:
    """The policy's chains for a kind as a person's choice of personal channels reshapes them.

    `chosen` = the personal channels (PERSONAL_CHANNELS) they want for the kind's category; None = no
    choice, the policy as it is. A personal channel not chosen leaves every chain. A chosen one the policy
    lacks for the kind joins the chain of the other personal channel, after it ("one of": credits are
    scarce), or, when the kind has no personal channel, becomes a chain of its own after in-app.
    """
    if chosen is None:
        return tuple(chains)
    wanted = [c for c in PERSONAL_CHANNELS if c in chosen]
    present = {c for chain in chains for c in chain}
    grown = [list(chain) for chain in chains]
    for channel in wanted:
        if channel in present:
            continue
        host = next((chain for chain in grown if any(c in PERSONAL_CHANNELS for c in chain)), None)
        if host is not None:
            host.append(channel)
        else:
            grown.insert(1 if grown and grown[0] == ["inapp"] else 0, [channel])
        present.add(channel)
    kept = (tuple(c for c in chain if c not in PERSONAL_CHANNELS or c in wanted) for chain in grown)
    return tuple(chain for chain in kept if chain)


def turned_off(chains: Sequence[Chain], chosen: Collection[str] | None) -> tuple[str, ...]:
    """The personal channels the policy uses for a kind that the person's choice turns off."""
    if chosen is None:
        return ()
    return tuple(c for chain in chains for c in chain if c in PERSONAL_CHANNELS and c not in chosen)


def turned_off_reason(kind: str, channel: str) -> str:
    return f"用户已关闭{NAMES[channel]}的「{CATEGORY_NAMES[category_of(kind)]}」通知"


def plan_deliveries(
    settings: PolicySettings,
    kind: str,
    recipient: Addressee,
    actor_id: int | None,
    chosen: Collection[str] | None = None,
) -> list[ChannelPlan]:
    """One plan per step of the kind's policy: the first usable channel of each chain is pending.

    A channel the user has an address for but the deployment has not configured is recorded as
    skipped, so an operator sees why a user with an openid got no WeChat message. A user's own action
    (a claim) is not pushed to their phone, and then no fallback either.

    `chosen`: the person's own choice of personal channels for the kind's category (see `chosen_chains`);
    a channel they turned off that they have an address for is recorded as skipped ("用户已关闭…"). That row
    also keeps the send-time fallback from ever giving the channel a row of its own.
    """
    self_action = actor_id is not None and actor_id == recipient.id
    plans: list[ChannelPlan] = []
    policy_chains = settings.channel_policy.chains_for(kind)
    for channel in turned_off(policy_chains, chosen):
        address = recipient.wechat_openid if channel == "wechat" else recipient.wecom_userid
        if address:
            plans.append(ChannelPlan(channel, "skipped", turned_off_reason(kind, channel)[:200]))
    for chain in chosen_chains(policy_chains, chosen):
        for channel in chain:
            verdict = judge(settings, channel, recipient.wechat_openid, recipient.wecom_userid, self_action)
            if verdict.usable:
                plans.append(ChannelPlan(channel, "pending", describe(chain, channel, verdict.why)[:200]))
                break
            if verdict.skip_reason:
                plans.append(ChannelPlan(channel, "skipped", verdict.skip_reason))
                if self_action:
                    break
    return plans
