"""Schemathesis against the OpenAPI schema, with a valid admin token: no 5xx, responses match the schema.

Bounded for CI: a few examples per operation, on SQLite (the API logic is the same on PostgreSQL, which
every other API test covers).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error, response_schema_conformance
from support import Api, database_url, start_stack, wipe
from support.channels import FakeWeChatServer, channel_settings, strict_state

pytestmark = pytest.mark.slow  # schemathesis fuzzes every route


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory) -> Iterator[tuple[Api, str]]:
    gen = database_url("sqlite", str(tmp_path_factory.mktemp("fuzz")))
    url = next(gen)
    # WeChat and WeCom configured (against the fake), so that the routes that call them answer as deployed.
    fake = FakeWeChatServer(strict_state()).start()
    ctx, server = start_stack(url, **channel_settings(fake.url))
    wipe(ctx)
    api = Api(url=server.url, ctx=ctx)
    admin = api.user("管理员", "admin", None)
    manager = api.user("王经理", "manager", "A")
    sales = api.user("李丽", "sales", "A", wechat_openid="o-fuzz")
    for i in range(5):
        lead = api.lead(manager, name=f"客户{i}")
        api.client(manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": sales.id})
    try:
        yield api, admin.token
    finally:
        api.close()
        server.stop()
        ctx.db.dispose()
        fake.stop()
        gen.close()


def openapi_spec() -> dict:
    """The schema the server publishes at /openapi.json, built without starting anything."""
    import tempfile

    from leadpush.app import create_app
    from leadpush.config import Settings
    from leadpush.context import AppContext

    path = tempfile.mkdtemp(prefix="leadpush-openapi-")
    ctx = AppContext.from_settings(Settings(database_url=f"sqlite:///{path}/unused.db"))
    return create_app(ctx).openapi()


# The lead import takes an .xlsx as raw bytes: fuzz it with bytes, some of them starting like a zip.
schemathesis.openapi.media_type(
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    st.one_of(st.binary(max_size=2000), st.binary(max_size=2000).map(lambda b: b"PK\x03\x04" + b)),
)
schema = schemathesis.openapi.from_dict(openapi_spec())


@schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_errors_and_responses_match_the_schema(case, fuzz_target):
    """Every operation, with generated valid and invalid input, as an admin."""
    api, token = fuzz_target
    case.call_and_validate(
        base_url=api.url,
        headers={"Authorization": f"Bearer {token}"},
        checks=[not_a_server_error, response_schema_conformance],
    )
