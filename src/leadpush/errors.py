"""The one error type the API raises, and the envelope every error answers with."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An expected failure: HTTP status, machine-readable code, Chinese message for the user."""

    def __init__(
        self, status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        # Extra response headers, e.g. Retry-After on a 429.
        self.headers = headers


def not_found(what: str = "customer") -> ApiError:
    names = {"customer": "线索", "user": "用户", "delivery": "投递记录", "rule": "流转规则", "notification": "通知"}
    return ApiError(404, f"{what}_not_found", f"{names.get(what, what)}不存在")


def forbidden(message: str = "没有权限执行此操作") -> ApiError:
    return ApiError(403, "forbidden", message)
