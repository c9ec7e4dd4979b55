"""Which channels a notification goes to, and why each is used or skipped."""

from __future__ import annotations

from dataclasses import dataclass

from leadpush.config import Settings
from leadpush.users.models import User


@dataclass(frozen=True)
class ChannelPlan:
    channel: str
    status: str  # pending | skipped
    reason: str


def plan_deliveries(settings: Settings, kind: str, recipient: User, actor_id: int | None) -> list[ChannelPlan]:
    """In-app always; WeChat when the user has an openid; WeCom when they have a WeCom id; webhook when set.

    A channel the deployment has not configured is recorded as skipped, so an operator sees why a user
    who has an openid got no WeChat message. A user's own action (a claim) is not pushed to their phone.
    """
    plans = [ChannelPlan("inapp", "pending", "站内通知始终发送")]
    self_action = actor_id is not None and actor_id == recipient.id
    if recipient.wechat_openid:
        if not settings.wechat_enabled:
            plans.append(ChannelPlan("wechat", "skipped", "未配置微信小程序渠道"))
        elif self_action:
            plans.append(ChannelPlan("wechat", "skipped", "本人操作，不推送"))
        else:
            plans.append(ChannelPlan("wechat", "pending", "用户已绑定小程序 openid"))
    if recipient.wecom_userid:
        if not settings.wecom_enabled:
            plans.append(ChannelPlan("wecom", "skipped", "未配置企业微信渠道"))
        elif self_action:
            plans.append(ChannelPlan("wecom", "skipped", "本人操作，不推送"))
        else:
            plans.append(ChannelPlan("wecom", "pending", "用户已绑定企业微信账号"))
    if settings.webhook_enabled:
        plans.append(ChannelPlan("webhook", "pending", "已配置出站 webhook"))
    return plans
