"""Shared API shapes: camelCase models and the {success, message, data} envelope."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic.alias_generators import to_camel

from leadpush.text import refuse_lone_surrogates

T = TypeVar("T")


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


class RequestModel(CamelModel):
    """Input bodies: unknown fields are rejected so a typo is an error, not a silent no-op."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    # A lone surrogate ("\ud800") in any field, however nested, is a 422 here rather than a 500 when
    # the database or a JSON encoder meets it.
    _no_lone_surrogates = field_validator("*", mode="before")(refuse_lone_surrogates)


class Envelope(CamelModel, Generic[T]):
    success: bool = True
    message: str = "ok"
    data: T | None = None


class ErrorEnvelope(CamelModel):
    success: bool = False
    message: str
    code: str
    data: Any = None


def ok(data: Any = None, message: str = "ok") -> dict[str, Any]:
    return {"success": True, "message": message, "data": data}


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(by_alias=True, mode="json")
