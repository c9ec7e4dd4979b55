"""The FastAPI application: routers, the error envelope, and the background roles it hosts."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

import leadpush.models  # noqa: F401  (every table mapped, whichever routers import them, so foreign keys resolve)
from leadpush import __version__
from leadpush.config import Settings
from leadpush.context import AppContext
from leadpush.deps import SIGNED_IN_USER, user_from_headers_async
from leadpush.errors import ApiError
from leadpush.logredact import install_log_redaction

log = logging.getLogger(__name__)

HTTP_CODES = {
    400: ("bad_request", "请求格式错误"),
    401: ("unauthorized", "请先登录"),
    403: ("forbidden", "没有权限执行此操作"),
    404: ("not_found", "请求的资源不存在"),
    405: ("method_not_allowed", "不支持该请求方法"),
    413: ("payload_too_large", "请求体过大"),
    415: ("unsupported_media_type", "请使用 application/json"),
    429: ("too_many_requests", "请求过于频繁，请稍后再试"),
}


def error_response(status: int, code: str, message: str, data: Any = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"success": False, "message": message, "code": code, "data": data})


# Pydantic's messages are English; the people reading these errors read Chinese.
VALIDATION_MESSAGES = {
    "missing": "为必填项",
    "int_parsing": "必须是整数",
    "int_type": "必须是整数",
    "float_parsing": "必须是数字",
    "float_type": "必须是数字",
    "bool_parsing": "必须是 true 或 false",
    "bool_type": "必须是 true 或 false",
    "string_type": "必须是字符串",
    "list_type": "必须是数组",
    "dict_type": "必须是 JSON 对象",
    "model_attributes_type": "必须是 JSON 对象（请使用 Content-Type: application/json）",
    "extra_forbidden": "是不支持的字段",
    "greater_than": "数值太小",
    "greater_than_equal": "数值太小",
    "less_than": "数值太大",
    "less_than_equal": "数值太大",
    "too_short": "太短",
    "too_long": "太长",
    "string_too_short": "不能为空",
    "string_too_long": "太长",
    "literal_error": "取值不在允许范围内",
    "enum": "取值不在允许范围内",
    "uuid_parsing": "格式不正确",
}


def _message(error: dict[str, Any]) -> str:
    kind = str(error.get("type", ""))
    if kind == "value_error":
        return str(error.get("msg", "")).removeprefix("Value error, ")
    return VALIDATION_MESSAGES.get(kind, "格式不正确")


def _is_branch_tag(part: Any) -> bool:
    """Union members appear in error locations as type names (`CustomerCreate`, `list[CustomerCreate]`)."""
    return isinstance(part, str) and (part[:1].isupper() or "[" in part)


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header") and not _is_branch_tag(p)]
    return ".".join(parts) or "body"


def _relevant(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For a body that may be an object or a list, drop the complaints of the branch that was not sent."""
    kept = [
        e
        for e in errors
        if not (
            e.get("type") in ("list_type", "model_attributes_type", "dict_type")
            and any(_is_branch_tag(p) for p in e.get("loc", ()))
        )
    ]
    return kept or errors


def database_down(exc: Exception) -> JSONResponse:
    # The database is unreachable (restarting, failing over): say so, briefly, and let clients retry.
    log.warning("数据库暂不可用：%s", type(getattr(exc, "orig", exc)).__name__)
    return error_response(503, "database_unavailable", "数据库暂时不可用，请稍后重试")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        response = error_response(exc.status, exc.code, exc.message, exc.details)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, "invalid_json", "请求体不是合法的 JSON")
        details = [
            {"field": _field_path(tuple(e.get("loc", ()))), "message": _message(e)} for e in _relevant(list(errors))
        ]
        first = details[0] if details else {"field": "body", "message": "参数错误"}
        return error_response(422, "validation_error", f"参数错误：{first['field']} {first['message']}", details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code, message = HTTP_CODES.get(exc.status_code, ("http_error", str(exc.detail)))
        return error_response(exc.status_code, code, message)

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def _database_down(_request: Request, exc: Exception) -> JSONResponse:
        return database_down(exc)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "服务器内部错误，请稍后重试")


def refuse_unread(status: int, code: str, message: str) -> JSONResponse:
    """An answer given before the request's body was read: close the connection afterwards, so that the
    server does not go on receiving (and discarding) a body nobody wants."""
    response = error_response(status, code, message)
    response.headers["connection"] = "close"
    return response


PLAIN_LENGTH = re.compile(rb"[0-9]{1,18}")


def declared_length(scope: dict[str, Any]) -> int | None:
    """The request's Content-Length: None when absent; ValueError unless it is one plain decimal number.

    The HTTP parser reads as many body bytes as a header like "29200000 " says, so a value this check
    could not read must not be waved through; several different values are refused too.
    """
    values = {v for k, v in scope.get("headers") or [] if k == b"content-length"}
    if not values:
        return None
    if len(values) > 1 or not all(PLAIN_LENGTH.fullmatch(v) for v in values):
        raise ValueError("invalid Content-Length")
    return int(values.pop())


def size_text(n: int) -> str:
    return f"{n / 1_000_000:g} MB" if n >= 1_000_000 and n % 100_000 == 0 else f"{n} 字节"


class BodySizeLimit:
    """Refuse request bodies over the limit before they are read into memory (413), and any
    Content-Length that is not a plain number (400). `larger` names the few paths (file uploads) allowed
    a larger body than the JSON API's."""

    def __init__(self, app: Any, max_bytes: int, larger: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = larger or {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.larger.get(scope["path"], self.max_bytes)
        what = "文件" if scope["path"] in self.larger and not scope["path"].startswith(INBOUND_PREFIX) else "请求体"
        too_large = f"{what}不能超过 {size_text(max_bytes)}"
        try:
            length = declared_length(scope)
        except ValueError:
            response = refuse_unread(400, "invalid_content_length", "请求头 Content-Length 必须是一个十进制整数")
            await response(scope, receive, send)
            return
        if length is not None and length > max_bytes:
            await refuse_unread(413, "payload_too_large", too_large)(scope, receive, send)
            return
        if length is not None:
            await self.app(scope, receive, send)
            return
        # No Content-Length (chunked): read up to the limit first, then hand the body on.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)
                return
            body = message.get("body", b"")
            seen += len(body)
            if seen > max_bytes:
                await error_response(413, "payload_too_large", too_large)(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


# The routes that sign people in: they take credentials in their body, not a bearer token.
SIGN_IN_PATHS = frozenset({"/api/auth/login", "/api/auth/miniprogram", "/console/api/session"})
# Lead intake signs in with a lead source's intake token or a signature, checked by its own routes.
INBOUND_PREFIX = "/api/leads/inbound"


def signs_in_by_header(path: str) -> bool:
    """Routes that need a user's `Authorization: Bearer`: the API and the console's JSON, except the sign-in
    routes and lead intake."""
    return (
        (path.startswith("/api/") or path.startswith("/console/api/"))
        and path not in SIGN_IN_PATHS
        and not path.startswith(INBOUND_PREFIX)
    )


class SignInBeforeBody:
    """Check the bearer token of a request that carries a body before any of the body is read.

    FastAPI reads and parses a body before it resolves dependencies, so the `current_user` dependency
    alone would let anyone make the server read and parse bodies. Here a request to a signed-in route
    that has a body is answered 401 / 429 from its headers; the user found is left in the request's
    state for `current_user`, so the token is checked once.
    """

    def __init__(self, app: Any, ctx: AppContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not signs_in_by_header(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if headers.get("content-length", "0") == "0" and "transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body: the dependency checks the token as usual
            return
        client = scope.get("client")
        address = client[0] if client else "unknown"
        try:
            user = await user_from_headers_async(self.ctx, headers, address)
        except ApiError as exc:
            response = refuse_unread(exc.status, exc.code, exc.message)
            if exc.headers:
                response.headers.update(exc.headers)
            await response(scope, receive, send)
            return
        except (OperationalError, InterfaceError) as exc:  # outside the app's exception handlers here
            response = database_down(exc)
            response.headers["connection"] = "close"
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})[SIGNED_IN_USER] = user
        await self.app(scope, receive, send)


def include_flat(app: FastAPI, router: APIRouter, responses: dict[int | str, dict[str, Any]] | None = None) -> None:
    """`app.include_router(router, responses=...)`, its HTTP routes added as the app's own.

    FastAPI (0.163) keeps an included router as one entry that, for every request, walks all its routes and,
    for the router that matched, walks them again to serve it: a request for a route in the eleventh router
    tried some 60 routes twice over, about 0.1 ms of the event loop's time per request. Routes added to the
    app itself are tried once each, in the same order. What is added is what `include_router` would serve
    and document (the same path, settings and merged `responses`: /openapi.json is unchanged, see
    tests/api/test_route_flat_routes.py). A router with anything but HTTP routes (the WebSocket) is included
    as usual.
    """
    if not all(isinstance(route, APIRoute) for route in router.routes):
        app.include_router(router, responses=responses)
        return
    for route in router.routes:
        assert isinstance(route, APIRoute)
        app.router.add_api_route(
            route.path,
            route.endpoint,
            response_model=route.response_model,
            status_code=route.status_code,
            tags=route.tags,
            dependencies=route.dependencies,
            summary=route.summary,
            description=route.description,
            response_description=route.response_description,
            responses={**(responses or {}), **route.responses},
            deprecated=route.deprecated,
            methods=route.methods,
            operation_id=route.operation_id,
            response_model_include=route.response_model_include,
            response_model_exclude=route.response_model_exclude,
            response_model_by_alias=route.response_model_by_alias,
            response_model_exclude_unset=route.response_model_exclude_unset,
            response_model_exclude_defaults=route.response_model_exclude_defaults,
            response_model_exclude_none=route.response_model_exclude_none,
            include_in_schema=route.include_in_schema,
            response_class=route.response_class,
            name=route.name,
            callbacks=route.callbacks,
            openapi_extra=route.openapi_extra,
            generate_unique_id_function=route.generate_unique_id_function,
            strict_content_type=route.strict_content_type,
        )


# The requests most made (issue 17: a console or the mini program assigning leads all day): their routes are
# tried first. No other route takes these paths, whatever the method (tests/api/test_route_flat_routes.py
# compares every method and path with the order the routers are declared in).
SERVED_FIRST = frozenset(
    {"/api/customers/{customer_id:int}/assign", "/api/customers/miniprogram/{customer_id:int}/assign"}
)


def serve_first(app: FastAPI, paths: frozenset[str]) -> None:
    """Try the routes of `paths` before the others (a route not tried costs each request ~1.5 µs of the event
    loop; the assignment routes came after some 50). /openapi.json keeps the order the routes were declared
    in, through FastAPI's documented way of providing the schema (`app.openapi`)."""
    documented = list(app.router.routes)
    app.router.routes.sort(key=lambda route: getattr(route, "path", None) not in paths)  # stable: the rest in order

    def openapi() -> dict[str, Any]:
        if not app.openapi_schema:
            app.openapi_schema = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                summary=app.summary,
                description=app.description,
                terms_of_service=app.terms_of_service,
                contact=app.contact,
                license_info=app.license_info,
                routes=documented,
                webhooks=app.webhooks.routes,
                tags=app.openapi_tags,
                servers=app.servers,
                separate_input_output_schemas=app.separate_input_output_schemas,
                external_docs=app.openapi_external_docs,
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(ctx: AppContext | None = None, *, roles: frozenset[str] = frozenset({"api"})) -> FastAPI:
    ctx = ctx or AppContext.from_settings(Settings())
    install_log_redaction()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from leadpush.runtime import Runtime

        runtime = Runtime(ctx, roles)
        app.state.runtime = runtime
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title="leadpush",
        version=__version__,
        description="线索分配与通知服务 (lead assignment and notification backend)",
        lifespan=lifespan,
        # A worker or scheduler alone serves no API, so no API documentation either.
        docs_url="/docs" if "api" in roles else None,
        redoc_url="/redoc" if "api" in roles else None,
        openapi_url="/openapi.json" if "api" in roles else None,
    )
    app.state.ctx = ctx
    install_error_handlers(app)
    # Outermost last: the real client address first, then sign-in, then the body's size.
    app.add_middleware(
        BodySizeLimit,
        max_bytes=ctx.settings.max_body_bytes,
        larger={"/api/customers/import": ctx.settings.max_import_bytes, INBOUND_PREFIX: ctx.settings.max_inbound_bytes},
    )
    app.add_middleware(SignInBeforeBody, ctx=ctx)
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=ctx.settings.trusted_proxy_hosts)

    from leadpush.assignment.views import creation as creation_router
    from leadpush.assignment.views import router as assignment_router
    from leadpush.intake.views import inbound as inbound_router
    from leadpush.intake.views import router as lead_sources_router
    from leadpush.leads.views import plans_router as follow_up_plans_router
    from leadpush.leads.views import router as leads_router
    from leadpush.notify.prefviews import router as preferences_router
    from leadpush.notify.views import router as notify_router
    from leadpush.notify.ws import router as ws_router
    from leadpush.ops import router as ops_router
    from leadpush.pools.views import pool_leads as pool_leads_router
    from leadpush.pools.views import router as pools_router
    from leadpush.routing.views import router as routing_router
    from leadpush.schemas import ErrorEnvelope
    from leadpush.sla.views import router as sla_router
    from leadpush.teams.views import router as teams_router
    from leadpush.transfer.views import router as transfer_router
    from leadpush.users.views import router as users_router
    from leadpush.web.views import router as web_router
    from leadpush.wechat.views import router as wechat_router
    from leadpush.wechat.views import sign_in_router as wechat_sign_in_router
    from leadpush.wecom.views import router as wecom_router

    errors: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorEnvelope, "description": message}
        for status, (_code, message) in HTTP_CODES.items()
        if status not in (405, 415)
    }
    errors[409] = {"model": ErrorEnvelope, "description": "冲突（版本冲突、已被领取、达到上限等）"}
    errors[422] = {"model": ErrorEnvelope, "description": "参数错误"}
    include_flat(app, ops_router)
    if "api" not in roles:
        # A worker or scheduler process answers health checks and metrics only; the API and console
        # belong to the api processes behind the proxy.
        return app
    include_flat(app, users_router, errors)
    include_flat(app, teams_router, errors)
    include_flat(app, pools_router, errors)
    include_flat(app, creation_router, errors)
    include_flat(app, leads_router, errors)
    include_flat(app, follow_up_plans_router, errors)
    include_flat(app, lead_sources_router, errors)
    include_flat(app, inbound_router, errors)
    include_flat(app, pool_leads_router, errors)
    include_flat(app, assignment_router, errors)
    include_flat(app, notify_router, errors)
    include_flat(app, preferences_router, errors)
    include_flat(app, ws_router)
    include_flat(app, transfer_router, errors)
    include_flat(app, sla_router, errors)
    include_flat(app, routing_router, errors)
    include_flat(app, wechat_router, errors)
    include_flat(app, wechat_sign_in_router, errors)
    include_flat(app, wecom_router)
    include_flat(app, web_router)
    serve_first(app, SERVED_FIRST)
    return app
