"""Every table, imported in one place for Alembic and create_all."""

from leadpush.assignment.models import Assignment
from leadpush.db import Base
from leadpush.intake.models import IntakeMerge, LeadSource
from leadpush.leads.models import Customer, FollowUp
from leadpush.notify.models import Delivery, KeyValue, Notification, Worker
from leadpush.pools.models import Pool, PoolMember
from leadpush.routing.models import DistributionMember, DistributionRule, UserAvailability
from leadpush.teams.models import Team
from leadpush.transfer.models import Lease, TransferRule, TransferRun
from leadpush.users.models import ApiToken, User
from leadpush.wechat.models import WechatSubscription

__all__ = [
    "ApiToken",
    "Assignment",
    "Base",
    "Customer",
    "Delivery",
    "DistributionMember",
    "DistributionRule",
    "FollowUp",
    "IntakeMerge",
    "KeyValue",
    "LeadSource",
    "Lease",
    "Notification",
    "Pool",
    "PoolMember",
    "Team",
    "TransferRule",
    "TransferRun",
    "User",
    "UserAvailability",
    "WechatSubscription",
    "Worker",
]
