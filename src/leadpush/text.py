"""What text the API accepts: one place that refuses characters which break storage or fake lines.

A lone UTF-16 surrogate (`"\\ud800"` in JSON) cannot be stored or sent anywhere; line breaks in a
name, and bidirectional controls anywhere, make one value look like several lines or a different
text in a WeCom card or the console. Single-line fields refuse all of them; multi-line fields keep
their line feeds (CR LF and CR become LF) and refuse the rest.
"""

from __future__ import annotations

import re
from typing import Any

LONE_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")
# LF, CR, NEL, LINE SEPARATOR, PARAGRAPH SEPARATOR. (Other C0 controls, VT and FF among them, are
# stripped by the fields' cleaning, as before.)
LINE_BREAK_RE = re.compile(r"[\n\r\x85\u2028\u2029]")
# Embeddings/overrides, isolates, LRM/RLM and the Arabic letter mark: they reorder what is shown.
BIDI_CONTROL_RE = re.compile(r"[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# In multi-line text, everything that breaks or reorders lines except the plain line feed.
MULTI_LINE_REFUSED_RE = re.compile(r"[\x85\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")

LONE_SURROGATE_MESSAGE = "含有无法识别的字符（不成对的 Unicode 代理项）"


def has_lone_surrogate(value: Any) -> bool:
    """Does a decoded JSON value (strings, keys, nested lists and objects) hold a lone surrogate?"""
    if isinstance(value, str):
        return LONE_SURROGATE_RE.search(value) is not None
    if isinstance(value, dict):
        return any(has_lone_surrogate(k) or has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(has_lone_surrogate(v) for v in value)
    return False


def refuse_lone_surrogates(value: Any) -> Any:
    """A Pydantic before-validator: refuse a value holding a lone surrogate (422, not a 500 later)."""
    if has_lone_surrogate(value):
        raise ValueError(LONE_SURROGATE_MESSAGE)
    return value


def single_line(value: str, label: str) -> str:
    """Refuse line breaks and bidi controls in a field shown as one line (names, phone, source, team)."""
    if LINE_BREAK_RE.search(value) or BIDI_CONTROL_RE.search(value):
        raise ValueError(f"{label}不能包含换行符或不可见的控制字符")
    return value


def multi_line(value: str, label: str) -> str:
    """Keep line feeds (CR LF and CR become LF); refuse other line separators and bidi controls."""
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    if MULTI_LINE_REFUSED_RE.search(value):
        raise ValueError(f"{label}不能包含特殊换行符或不可见的控制字符")
    return value
