"""Test support: real databases (SQLite file, PostgreSQL), a real uvicorn server, real HTTP clients.

Submodules by job: `databases` (PostgreSQL, SQLite, Redis), `servers` (leadpush in a thread),
`api` (acting as users, reading answers), `leads` (leads moved and what was recorded), `waiting`
(`wait_for`, `holds_for`), `channels` (the fake WeChat server and leadpush pointed at it), `procs` (`leadpush`
subprocesses, a private Redis), `pgcluster` (a private PostgreSQL), `wsclient`, `receiver`
(a webhook receiver) and `browser` (chromium). `channels`, `procs` and `browser` are also pytest
plugins (registered in conftest.py) with the fixtures several test modules share. The names below are
re-exported for `from support import X`.
"""

from support.api import CJK, Api, Person, ok, refused
from support.databases import (
    DATABASES,
    IN_CI,
    PG_ADMIN_URL,
    REDIS_URL,
    database_url,
    postgres_database,
    require_redis,
    service_unavailable,
    try_start_postgres,
    unavailable,
    wipe,
)
from support.servers import (
    NO_SCHEDULER,
    WITHOUT_SCHEDULER,
    FakeClock,
    ServerThread,
    free_port,
    inapp_left_to_the_worker,
    make_settings,
    running_stack,
    start_stack,
)
from support.waiting import holds_for, wait_for

__all__ = [
    "CJK",
    "DATABASES",
    "IN_CI",
    "NO_SCHEDULER",
    "PG_ADMIN_URL",
    "REDIS_URL",
    "WITHOUT_SCHEDULER",
    "Api",
    "FakeClock",
    "Person",
    "ServerThread",
    "database_url",
    "free_port",
    "inapp_left_to_the_worker",
    "make_settings",
    "ok",
    "postgres_database",
    "refused",
    "require_redis",
    "running_stack",
    "service_unavailable",
    "start_stack",
    "try_start_postgres",
    "unavailable",
    "holds_for",
    "wait_for",
    "wipe",
]
