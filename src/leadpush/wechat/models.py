"""WeChat subscribe-message credits: how many messages each user agreed to receive per template."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from leadpush.clock import utcnow
from leadpush.db import Base, UTCDateTime


class WechatSubscription(Base):
    __tablename__ = "wechat_subscriptions"
    __table_args__ = (UniqueConstraint("user_id", "template_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    template_id: Mapped[str] = mapped_column(String(128))
    credits: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The last answer wx.requestSubscribeMessage gave for this template (accept | reject | ban | filter) and
    # when: "ban" (subscriptions switched off) and "filter" tell the client to ask the user to re-enable.
    last_result: Mapped[str | None] = mapped_column(String(16))
    last_result_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
