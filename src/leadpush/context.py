"""What a running leadpush holds: settings, database, clock and wake-up signals."""

from __future__ import annotations

from dataclasses import dataclass, field

from leadpush import rulecache
from leadpush.clock import Clock, SystemClock
from leadpush.config import Settings
from leadpush.db import Database
from leadpush.notify.signals import Signals
from leadpush.ratelimit import RateLimiter
from leadpush.sla.metrics import SlaMetrics
from leadpush.users.sessions import TokenUses


@dataclass
class AppContext:
    settings: Settings
    db: Database
    clock: Clock = field(default_factory=SystemClock)
    signals: Signals = field(default_factory=Signals)
    limiter: RateLimiter = field(default_factory=RateLimiter)
    token_uses: TokenUses = field(default_factory=TokenUses)
    sla_metrics: SlaMetrics = field(default_factory=SlaMetrics)

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock | None = None) -> AppContext:
        db = Database(settings.database_url, loop_slots=settings.api_loop_slots)
        rulecache.install(db.engines, settings.rule_cache_seconds)
        return cls(
            settings=settings,
            db=db,
            clock=clock or SystemClock(),
            limiter=RateLimiter(settings.redis_url, settings.redis_prefix),
        )
